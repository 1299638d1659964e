//! A tiny built-in upstream for `--demo`: it answers every request with a
//! plain-text echo of what it received (request line, headers) and its own
//! name, so a newcomer can see what the proxy forwarded. `--demo` also
//! deploys two frontend and two backend branches under `localhost`, each
//! one of these: a frontend answers a page that calls `/api/hello` on its
//! own origin and shows which backend branch answered, a backend answers
//! JSON. An upstream at the end of the flow, fed by the `--demo` provider.

use std::convert::Infallible;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a demo upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request, echoed as text.
    Echo,
    /// A page that calls `/api/hello` and shows the answer.
    Frontend,
    /// JSON naming itself and the request.
    Backend,
}

/// The demo's branch environments: (role, branch).
pub const BRANCHES: [(Kind, &str); 4] = [
    (Kind::Frontend, "main"),
    (Kind::Frontend, "feature/login"),
    (Kind::Backend, "main"),
    (Kind::Backend, "feature/payments"),
];

/// Serves `kind` answers as `name` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, name: String, kind: Kind, shutdown: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let name = name.clone();
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| {
                    let resp = match kind {
                        Kind::Echo => echo(&name, &req),
                        Kind::Frontend => page(&name),
                        Kind::Backend => api(&name, &req),
                    };
                    std::future::ready(Ok::<_, Infallible>(resp))
                }),
            )
            .into_owned();
        tokio::spawn(conn);
    }
}

fn echo(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut out = format!(
        "Hello from {name}, reached through branchgate.\n\n{} {} {:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        let _ = writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A frontend branch's page: it asks its own origin's `/api/hello`, which
/// branchgate sends to the environment's backend branch.
fn page(name: &str) -> Response<Full<Bytes>> {
    let name = crate::proxy::pages::esc(name);
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;margin:2em\"><h1>{name}</h1>\
         <p id=\"api\">asking /api/hello on this origin…</p>\
         <p><a href=\"//localhost:\" id=\"matrix\">all environments</a></p>\
         <script>\
         document.getElementById('matrix').href = location.protocol + '//localhost:' + location.port + '/';\
         fetch('/api/hello').then(r => r.json()).then(j => {{\
         document.getElementById('api').textContent = 'The API answered from ' + j.backend + '.';\
         }}).catch(e => {{ document.getElementById('api').textContent = 'The API failed: ' + e; }});\
         </script></body></html>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// A backend branch's answer.
fn api(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A self-signed certificate for `localhost` and `*.localhost`, made at
/// start, so `--demo` shows HTTPS too (browsers and `curl` without `-k` will
/// not trust it, by design).
pub fn certificate(provider: &rustls::crypto::CryptoProvider) -> anyhow::Result<crate::tls::Cert> {
    let mut names = vec!["localhost".to_owned(), "*.localhost".to_owned()];
    // `fe.be.localhost` is two labels deep: one wildcard per demo backend.
    for (kind, branch) in BRANCHES {
        if kind == Kind::Backend {
            names.push(format!("*.{}.localhost", crate::routes::slug(branch)));
        }
    }
    let made = rcgen::generate_simple_self_signed(names)?;
    crate::tls::Cert::parse(
        std::path::Path::new("(demo, self-signed)"),
        made.cert.pem().as_bytes(),
        made.signing_key.serialize_pem().as_bytes(),
        provider,
    )
    .map_err(|e| anyhow::anyhow!(e))
}
