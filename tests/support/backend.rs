//! An in-process upstream that reports what it received.
//!
//! - any path: JSON `{backend, method, uri, version, headers}`
//! - `/slow/MS`: the same after MS milliseconds
//! - `/bytes/N`: N bytes streamed in 64 KiB chunks
//! - `/upload`: drains the body, answers `{received: N}`
//! - `/reset`: drops the connection without answering
//! - `/early`: answers at once while the upload is still being read
//! - `/hop`: a response carrying hop-by-hop headers
//! - `/ws` (or any path ending in `/ws`): a WebSocket echo

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, std::io::Error>;

/// A running backend; stops when dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, reported in every JSON answer.
    pub name: String,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Backend {
    /// Starts a plain-HTTP backend.
    pub async fn spawn(name: &str) -> Self {
        Self::start(name, None).await
    }

    /// Starts an HTTPS backend with a self-signed certificate.
    pub async fn spawn_tls(name: &str) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["backend.test".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start(name, Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (n, s, name_c) = (accepted.clone(), stop.clone(), name.to_owned());
        let r = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = s.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                n.fetch_add(1, Ordering::SeqCst);
                let name = name_c.clone();
                let tls = tls.clone();
                let stop = s.clone();
                let requests = r.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        requests.fetch_add(1, Ordering::SeqCst);
                        handle(name.clone(), req)
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acc) => {
                            let Ok(stream) = acc.accept(stream).await else {
                                return;
                            };
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, () = stop.cancelled() => {} }
                        }
                        None => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, () = stop.cancelled() => {} }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            accepted,
            requests,
            stop,
        }
    }

    /// Requests that reached the backend so far (counted as they arrive).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests have reached the backend.
    pub async fn wait_for_requests(&self, n: usize) {
        super::eventually(
            Duration::from_secs(5),
            "requests to reach the backend",
            || async { (self.requests() >= n).then_some(()) },
        )
        .await;
    }

    /// Waits until the backend has accepted a connection (a request reached it).
    pub async fn wait_for_connection(&self) {
        super::eventually(
            Duration::from_secs(5),
            "a request to reach the backend",
            || async { (self.connections() > 0).then_some(()) },
        )
        .await;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

fn echo(name: &str, req: &Request<Incoming>) -> Response<Body> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    resp
}

async fn handle(
    name: String,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
        return Ok(echo(&name, &req));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64);
                Some((Ok(Frame::data(chunk.slice(..n as usize))), left - n))
            }
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert("content-length", total.to_string().parse().unwrap());
        return Ok(resp);
    }
    match path.as_str() {
        "/upload" => {
            let mut body = req.into_body();
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(std::io::Error::other)?;
                if let Some(d) = frame.data_ref() {
                    received += d.len() as u64;
                }
            }
            Ok(Response::new(full(
                serde_json::json!({ "received": received }).to_string(),
            )))
        }
        "/reset" => Err(std::io::Error::other("reset on purpose")),
        "/early" => {
            // Answers at once, and keeps reading the upload in the background.
            let resp = echo(&name, &req);
            let mut body = req.into_body();
            tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
            Ok(resp)
        }
        "/hop" => {
            let mut resp = echo(&name, &req);
            let h = resp.headers_mut();
            h.insert("connection", "x-resp-hop".parse().unwrap());
            h.insert("x-resp-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-resp-kept", "1".parse().unwrap());
            Ok(resp)
        }
        p if p == "/ws" || p.ends_with("/ws") => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                let mut r = Response::new(full("not a websocket request"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(r);
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert("upgrade", "websocket".parse().unwrap());
            h.insert("connection", "upgrade".parse().unwrap());
            h.insert("sec-websocket-accept", accept.parse().unwrap());
            h.insert("x-backend", name.parse().unwrap());
            Ok(resp)
        }
        _ => Ok(echo(&name, &req)),
    }
}
