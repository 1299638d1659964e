//! The TLS handshake of one accepted connection, run in that connection's
//! own task under a timeout, so a slow or stuck client never holds up
//! accepting.
//!
//! In order: plain HTTP sent to the HTTPS port is answered 400 (as nginx
//! does) and closed; the ClientHello is read; an SNI that is not a host name
//! (illegal characters, an IP address) is refused with `illegal_parameter`;
//! a name no certificate may be served for gets `unrecognized_name`; then
//! rustls completes the handshake with the certificate the
//! [`Selector`](super::Selector) chooses.

use std::io;
use std::net::IpAddr;

use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::{Selected, Tls};
use crate::acme::challenge::ACME_TLS_ALPN;

/// The largest ClientHello read before giving up (a hello with large key
/// shares is under 2 KiB; TLS caps a handshake message at 16 MiB, we don't).
const MAX_HELLO: usize = 64 * 1024;

/// A TLS record of content type handshake starts with this byte.
const HANDSHAKE_RECORD: u8 = 0x16;

/// TLS alert descriptions sent before rustls takes over.
const ALERT_ILLEGAL_PARAMETER: u8 = 47;
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// Why a connection got no TLS session.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A plain HTTP request on the HTTPS port (answered 400).
    #[error("plain HTTP sent to the HTTPS port")]
    PlainHttp,
    /// Neither TLS nor HTTP.
    #[error("not a TLS handshake")]
    NotTls,
    /// The ClientHello was refused by rustls.
    #[error("bad ClientHello: {0}")]
    Hello(rustls::Error),
    /// The SNI is an IP address (RFC 6066 forbids it).
    #[error("an IP address as SNI")]
    IpSni,
    /// No certificate may be served for this name.
    #[error("no certificate for {0:?}")]
    NoCertificate(Option<String>),
    /// An `acme-tls/1` handshake no order awaits.
    #[error("acme-tls/1 for {0:?}, which no order awaits")]
    NoChallenge(Option<String>),
    /// A TLS-ALPN-01 challenge was answered (the connection ends there).
    #[error("TLS-ALPN-01 challenge answered")]
    AcmeChallenge,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The handshake failed, or the socket did.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Tls {
    /// Runs the handshake on `stream`: the ClientHello and the rest each
    /// under the handshake timeout; in between, a first handshake for a
    /// routed branch host may wait (`--acme-on-demand-timeout`) while ACME
    /// issues its certificate.
    pub async fn handshake(&self, mut stream: TcpStream) -> Result<TlsStream<TcpStream>, Refused> {
        let (accepted, raw) = self.timed(read_hello(&mut stream)).await?;
        let hello = accepted.client_hello();
        let sni = hello.server_name().map(str::to_owned);
        let acme_tls = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme_tls {
            return self
                .timed(self.answer_alpn_challenge(accepted, stream, sni))
                .await;
        }
        if sni.is_none() && sni_is_ip(&raw) {
            send_alert(&mut stream, ALERT_ILLEGAL_PARAMETER).await;
            return Err(Refused::IpSni);
        }
        let mut selected = self.selector.choose(sni.as_deref());
        if let (Selected::Fallback(_) | Selected::Nothing, Some(acme), Some(host)) =
            (&selected, &self.selector.acme, &sni)
        {
            let host = host.to_ascii_lowercase();
            if acme.wants_on_demand(&host) && acme.on_demand(&host).await {
                selected = self.selector.choose(sni.as_deref());
            }
        }
        if let Selected::Nothing = selected {
            send_alert(&mut stream, ALERT_UNRECOGNIZED_NAME).await;
            return Err(Refused::NoCertificate(sni));
        }
        let tls = self
            .timed(StartHandshake::from_parts(accepted, stream).into_stream(self.config().clone()))
            .await?;
        Ok(tls)
    }

    async fn timed<T, E>(&self, f: impl Future<Output = Result<T, E>>) -> Result<T, Refused>
    where
        Refused: From<E>,
    {
        match tokio::time::timeout(self.handshake_timeout, f).await {
            Ok(done) => done.map_err(Refused::from),
            Err(_) => Err(Refused::Timeout),
        }
    }

    /// TLS-ALPN-01 (RFC 8737): a handshake offering `acme-tls/1` gets the
    /// challenge certificate for its SNI, and the connection ends there.
    async fn answer_alpn_challenge(
        &self,
        accepted: rustls::server::Accepted,
        mut stream: TcpStream,
        sni: Option<String>,
    ) -> Result<TlsStream<TcpStream>, Refused> {
        let config = match (&self.alpn_config, &sni) {
            (Some(config), Some(host))
                if self.selector.acme.as_ref().is_some_and(|a| {
                    a.challenges.alpn_cert(&host.to_ascii_lowercase()).is_some()
                }) =>
            {
                config.clone()
            }
            _ => {
                send_alert(&mut stream, ALERT_NO_APPLICATION_PROTOCOL).await;
                return Err(Refused::NoChallenge(sni));
            }
        };
        let mut tls = StartHandshake::from_parts(accepted, stream)
            .into_stream(config)
            .await?;
        let _ = tls.shutdown().await;
        debug!(sni = ?sni, "TLS-ALPN-01 challenge answered");
        Err(Refused::AcmeChallenge)
    }
}

/// Reads the ClientHello: the accepted hello, and every byte read (for the
/// SNI check). Plain HTTP is answered here.
async fn read_hello(
    stream: &mut TcpStream,
) -> Result<(rustls::server::Accepted, Vec<u8>), Refused> {
    let mut acceptor = Acceptor::default();
    let mut raw = Vec::with_capacity(2048);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if raw.is_empty() && buf[0] != HANDSHAKE_RECORD {
            return Err(refuse_not_tls(stream, &buf[..n]).await);
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_HELLO {
            return Err(Refused::NotTls);
        }
        let mut fed = &buf[..n];
        while !fed.is_empty() {
            acceptor.read_tls(&mut fed)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((accepted, raw)),
            Ok(None) => continue,
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = stream.write_all(&out).await;
                return Err(Refused::Hello(error));
            }
        }
    }
}

/// A fatal alert, in a plaintext record (nothing was negotiated yet).
async fn send_alert(stream: &mut TcpStream, description: u8) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description];
    let _ = stream.write_all(&record).await;
    let _ = stream.shutdown().await;
}

/// The answer nginx gives to plain HTTP on its HTTPS port.
const PLAIN_HTTP_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\n\
<body><h1>400 Bad Request</h1><p>The plain HTTP request was sent to HTTPS port.</p><hr><p>branchgate</p></body></html>\n";

/// Answers a plain HTTP request with 400 and closes; closes on anything else.
async fn refuse_not_tls(stream: &mut TcpStream, first: &[u8]) -> Refused {
    if !first[0].is_ascii_uppercase() {
        return Refused::NotTls;
    }
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        PLAIN_HTTP_PAGE.len()
    );
    let mut reply = head.into_bytes();
    reply.extend_from_slice(PLAIN_HTTP_PAGE.as_bytes());
    if stream.write_all(&reply).await.is_ok() {
        // Read what the client still sends before closing, so the close is
        // a FIN and not a reset that could destroy the answer in flight.
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
    debug!("plain HTTP on the HTTPS port answered 400");
    Refused::PlainHttp
}

/// Whether the ClientHello in `raw` (TLS records as received) names an IP
/// address as its `server_name`. rustls treats that as no SNI; we refuse it
/// (RFC 6066 3: "Literal IPv4 and IPv6 addresses are not permitted").
/// Anything that does not parse is `false`: rustls has read the same bytes.
pub fn sni_is_ip(raw: &[u8]) -> bool {
    sni(raw).is_some_and(|name| {
        std::str::from_utf8(&name).is_ok_and(|s| {
            let s = s
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(s);
            s.parse::<IpAddr>().is_ok()
        })
    })
}

/// The first `host_name` of the `server_name` extension of the ClientHello
/// in `raw` (TLS records as received), as sent; `None` when there is none or
/// the bytes do not parse.
pub fn sni(raw: &[u8]) -> Option<Vec<u8>> {
    let hello = handshake_bytes(raw)?;
    server_name(&hello).map(<[u8]>::to_vec)
}

/// The handshake-layer bytes of the records in `raw`.
fn handshake_bytes(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // Whole handshake records from the start; whatever follows them (another
    // record type, a record cut short) is not the hello's.
    while raw.len() >= 5 && raw[0] == HANDSHAKE_RECORD {
        let len = usize::from(u16::from_be_bytes([raw[3], raw[4]]));
        let Some(fragment) = raw.get(5..5 + len) else {
            break;
        };
        out.extend_from_slice(fragment);
        raw = &raw[5 + len..];
    }
    Some(out)
}

/// The first `host_name` of the ClientHello's `server_name` extension.
fn server_name(hs: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(hs);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let body = r.take(len)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    let n = usize::from(r.u8()?);
    r.take(n)?; // session id
    let n = r.u16()?;
    r.take(n)?; // cipher suites
    let n = usize::from(r.u8()?);
    r.take(n)?; // compression methods
    let n = r.u16()?;
    let mut exts = Reader(r.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let data = exts.take(n)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let n = list.u16()?;
        let mut names = Reader(list.take(n)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = names.u16()?;
            let name = names.take(n)?;
            if name_type == 0 {
                return Some(name);
            }
        }
        return None;
    }
    None
}

/// Big-endian reads off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with this server_name.
    fn hello(name: &[u8]) -> Vec<u8> {
        let mut sni = Vec::new();
        let entry_len = 3 + name.len();
        sni.extend_from_slice(&(entry_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut exts = vec![0, 0];
        exts.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        exts.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        // Split across two records, as a client may.
        let (a, b) = hs.split_at(10);
        let mut raw = Vec::new();
        for part in [a, b] {
            raw.extend_from_slice(&[0x16, 3, 1]);
            raw.extend_from_slice(&(part.len() as u16).to_be_bytes());
            raw.extend_from_slice(part);
        }
        raw
    }

    #[test]
    fn ip_addresses_as_sni_are_seen() {
        assert!(sni_is_ip(&hello(b"127.0.0.1")));
        assert!(sni_is_ip(&hello(b"::1")));
        assert!(sni_is_ip(&hello(b"[::1]")));
        assert!(!sni_is_ip(&hello(b"a.foo.bar")));
        assert!(!sni_is_ip(&hello(b"1.2.3.4.foo.bar")));
        // Cut short or garbage: no answer, never a panic.
        let h = hello(b"127.0.0.1");
        for n in 0..h.len() {
            assert!(!sni_is_ip(&h[..n]));
        }
        assert!(!sni_is_ip(&[0x16, 3, 1, 0xff, 0xff, 1, 2, 3]));
        // Bytes after the hello (another record, or one cut short) do not hide it.
        for tail in [&[0x14, 3, 3, 0, 1, 1][..], &[0x16, 3, 3, 0, 9, 1], &[0]] {
            let mut h = hello(b"127.0.0.1");
            h.extend_from_slice(tail);
            assert!(sni_is_ip(&h), "{tail:?}");
        }
    }
}
