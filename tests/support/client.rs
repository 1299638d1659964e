//! A small HTTP client for tests: one fresh connection per call unless a
//! [`Conn`] is kept.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The name of the backend that answered (`x-backend`), or "" for the proxy itself.
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The value of a request header as the backend saw it (all values joined by "|").
    pub fn seen_header(&self, name: &str) -> Option<String> {
        let v = self.json();
        let vals: Vec<String> = v["headers"]
            .as_array()?
            .iter()
            .filter(|p| p[0].as_str() == Some(name))
            .map(|p| p[1].as_str().unwrap().to_owned())
            .collect();
        (!vals.is_empty()).then(|| vals.join("|"))
    }

    /// The request URI the backend saw.
    pub fn seen_uri(&self) -> String {
        self.json()["uri"].as_str().unwrap().to_owned()
    }
}

/// A kept-alive HTTP/1.1 connection.
pub struct Conn(http1::SendRequest<Full<Bytes>>);

/// An HTTP/1.1 connection to `addr` whose requests carry any body type
/// (streamed uploads); the connection is driven by a spawned task.
pub async fn sender<B>(addr: SocketAddr) -> http1::SendRequest<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Self {
        Self(sender(addr).await)
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.0.ready().await?;
        let resp = self.0.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// GET `path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, hyper::Error> {
        self.send(
            Request::get(path)
                .header("host", host)
                .body(Full::default())
                .unwrap(),
        )
        .await
    }
}

/// GET `path` with `Host: host` on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Conn::open(addr).await.get(host, path).await.unwrap()
}

/// GET with extra headers on a fresh connection.
pub async fn get_with(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Conn::open(addr)
        .await
        .send(b.body(Full::default()).unwrap())
        .await
        .unwrap()
}

/// Writes raw bytes and reads until the peer closes (or 5 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
