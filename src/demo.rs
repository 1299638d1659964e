//! A tiny built-in upstream for `--demo` and for test images: it answers every
//! request with a plain-text echo of what it received (request line, headers)
//! and its own name, so a newcomer can see what the proxy forwarded. An
//! upstream at the end of the flow, fed by the `--demo` provider entry.

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

/// Serves the echo page on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, name: String, shutdown: CancellationToken) {
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
                service_fn(move |req| std::future::ready(Ok::<_, Infallible>(echo(&name, &req)))),
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

/// A self-signed certificate for `localhost` and `*.localhost`, made at
/// start, so `--demo` shows HTTPS too (browsers and `curl` without `-k` will
/// not trust it, by design).
pub fn certificate(provider: &rustls::crypto::CryptoProvider) -> anyhow::Result<crate::tls::Cert> {
    let names = vec!["localhost".to_owned(), "*.localhost".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)?;
    crate::tls::Cert::parse(
        std::path::Path::new("(demo, self-signed)"),
        made.cert.pem().as_bytes(),
        made.signing_key.serialize_pem().as_bytes(),
        provider,
    )
    .map_err(|e| anyhow::anyhow!(e))
}
