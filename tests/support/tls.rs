//! TLS for tests: a throw-away CA (rcgen) that issues certificates into an
//! nginx-proxy style directory, and a client that says which certificate it
//! was served and which protocol it agreed on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use branchgate::upstream::tls::AcceptAnyCert;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Reply;

/// The key of an issued certificate, and how its `.key` file is written.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    /// A fresh ECDSA P-256 key, PKCS#8.
    Ec,
    /// The fixture P-256 key, written as SEC1 (`BEGIN EC PRIVATE KEY`).
    EcSec1,
    /// The fixture RSA 2048 key, written as PKCS#8.
    Rsa,
    /// The fixture RSA 2048 key, written as PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

impl Key {
    /// The signing key, and the PEM text of its `.key` file.
    fn make(self) -> (KeyPair, String) {
        match self {
            Key::Ec => {
                let k = KeyPair::generate().unwrap();
                let pem = k.serialize_pem();
                (k, pem)
            }
            Key::EcSec1 => (
                KeyPair::from_pem(&fixture("ec-pkcs8.key")).unwrap(),
                fixture("ec-sec1.key"),
            ),
            Key::Rsa | Key::RsaPkcs1 => {
                let k = KeyPair::from_pkcs8_pem_and_sign_algo(
                    &fixture("rsa-pkcs8.key"),
                    &rcgen::PKCS_RSA_SHA256,
                )
                .unwrap();
                let file = match self {
                    Key::Rsa => "rsa-pkcs8.key",
                    _ => "rsa-pkcs1.key",
                };
                (k, fixture(file))
            }
        }
    }
}

/// A throw-away certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// An issued certificate: PEM chain (leaf, then the CA) and key.
pub struct Issued {
    /// `<name>.crt` content.
    pub chain: String,
    /// `<name>.key` content.
    pub key: String,
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

impl Issued {
    /// base64(SHA-256(SPKI)), as Chromium's `--ignore-certificate-errors-spki-list` takes it.
    pub fn spki_sha256_base64(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.spki);
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    }

    /// Writes `<dir>/<name>.crt` and `.key` (the key first, so a poll never
    /// sees a new certificate with the old key).
    pub fn write(&self, dir: &Path, name: &str) {
        super::proxy::write_atomically(&dir.join(format!("{name}.key")), &self.key);
        super::proxy::write_atomically(&dir.join(format!("{name}.crt")), &self.chain);
    }
}

impl Ca {
    /// A new CA.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "branchgate test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` whose common name is `cn` (tests read it back to
    /// see which certificate was served), valid now.
    pub fn issue(&self, cn: &str, names: &[&str], key: Key) -> Issued {
        self.issue_with(cn, names, key, false)
    }

    /// Like [`Ca::issue`], but expired since 2020.
    pub fn issue_expired(&self, cn: &str, names: &[&str]) -> Issued {
        self.issue_with(cn, names, Key::Ec, true)
    }

    fn issue_with(&self, cn: &str, names: &[&str], key: Key, expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let (signing, key_pem) = key.make();
        let cert = params.signed_by(&signing, &self.issuer).unwrap();
        Issued {
            chain: format!("{}{}", cert.pem(), self.issuer.pem()),
            key: key_pem,
            spki: signing.subject_public_key_info(),
        }
    }
}

/// What a handshake gave.
pub struct Session {
    /// The stream, ready for HTTP.
    pub stream: TlsStream<TcpStream>,
    /// The common name of the served leaf.
    pub cn: String,
    /// The ALPN protocol agreed, if any.
    pub alpn: Option<Vec<u8>>,
    /// `TLSv1_2` or `TLSv1_3`.
    pub version: rustls::ProtocolVersion,
    /// Whether the handshake resumed an earlier session.
    pub resumed: bool,
    /// The served chain, leaf first (DER).
    pub chain: Vec<CertificateDer<'static>>,
}

/// How a test client connects.
#[derive(Clone, Debug)]
pub struct Client {
    /// SNI to send (`None`: none, as for an IP address).
    pub sni: Option<String>,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
    /// Only this TLS version, if set.
    pub version: Option<&'static rustls::SupportedProtocolVersion>,
    /// Trust only this CA (PEM) and check the name; `None` accepts any certificate.
    pub ca: Option<String>,
    /// How sessions are resumed (rustls' default: tickets, and session ids for TLS 1.2).
    pub resumption: rustls::client::Resumption,
}

impl Client {
    /// Offers `h2` and `http/1.1`, sends `sni`, accepts any certificate.
    pub fn new(sni: &str) -> Self {
        Self {
            sni: Some(sni.to_owned()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            version: None,
            ca: None,
            resumption: rustls::client::Resumption::default(),
        }
    }

    /// Connects and completes the handshake.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Session, std::io::Error> {
        self.connect_via(&self.connector(), addr).await
    }

    /// A connector that keeps its sessions for resumption across connections.
    pub fn connector(&self) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = match self.version {
            Some(v) => vec![v],
            None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .unwrap();
        let mut config = match &self.ca {
            Some(pem) => {
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config.enable_sni = self.sni.is_some();
        config.resumption = self.resumption.clone();
        TlsConnector::from(Arc::new(config))
    }

    /// Connects through `connector` (from [`Client::connector`]).
    pub async fn connect_via(
        &self,
        connector: &TlsConnector,
        addr: SocketAddr,
    ) -> Result<Session, std::io::Error> {
        let name = match &self.sni {
            Some(s) => ServerName::try_from(s.clone()).unwrap(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tcp = TcpStream::connect(addr).await?;
        let stream = connector.connect(name, tcp).await?;
        let (_, conn) = stream.get_ref();
        let chain: Vec<CertificateDer<'static>> = conn.peer_certificates().unwrap().to_vec();
        let leaf = chain[0].clone();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let version = conn.protocol_version().unwrap();
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Ok(Session {
            resumed,
            chain,
            cn: common_name(&leaf),
            alpn,
            version,
            stream,
        })
    }
}

/// The subject CN of a certificate.
pub fn common_name(der: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(der.as_ref()).unwrap();
    c.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The name of the alert a failed handshake received (`UnrecognisedName`, ...).
pub fn alert(err: &std::io::Error) -> String {
    let text = format!("{err:?}");
    match text.split_once("AlertReceived(") {
        Some((_, rest)) => rest.split(')').next().unwrap_or_default().to_owned(),
        None => panic!("not an alert: {text}"),
    }
}

impl Session {
    /// Sends one GET for `path` with `Host: host` over HTTP/2 if agreed, else HTTP/1.1.
    pub async fn get(self, host: &str, path: &str) -> (Reply, http::Version) {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }

    /// Sends `req` (HTTP/2 if agreed, else HTTP/1.1) and reads the whole answer.
    pub async fn send(self, mut req: Request<Full<Bytes>>) -> (Reply, http::Version) {
        let io = TokioIo::new(self.stream);
        let resp = if self.alpn.as_deref() == Some(b"h2") {
            // HTTP/2 names the host in :authority.
            let host = req.headers_mut().remove("host").unwrap();
            let uri = format!("https://{}{}", host.to_str().unwrap(), req.uri());
            *req.uri_mut() = uri.parse().unwrap();
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        let version = resp.version();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            version,
        )
    }
}

/// GET `https://host{path}` at `addr` with SNI `host`; panics if the handshake fails.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let session = Client::new(host)
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("handshake for {host}: {e}"));
    session.get(host, path).await.0
}

/// The status only.
pub async fn status(addr: SocketAddr, host: &str, path: &str) -> StatusCode {
    get(addr, host, path).await.status
}

/// A ClientHello that rustls reads, naming `sni`.
pub fn client_hello(sni: &[u8]) -> Vec<u8> {
    fn vec16(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }
    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(vec16(data));
        out
    }
    let mut name = vec![0];
    name.extend(vec16(sni));
    let mut exts = ext(0, &vec16(&name));
    exts.extend(ext(10, &vec16(&[0x00, 0x1d, 0x00, 0x17]))); // x25519, P-256
    exts.extend(ext(11, &[1, 0])); // point formats
    exts.extend(ext(13, &vec16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]))); // signature schemes
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9; 32]);
    body.push(0);
    body.extend(vec16(&[0xc0, 0x2b, 0xc0, 0x2f])); // ECDHE AES-128-GCM suites
    body.extend_from_slice(&[1, 0]);
    body.extend(vec16(&exts));
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 3, 1];
    record.extend(vec16(&hs));
    record
}

/// Sends `bytes` and reads until the server closes (at most 5 s).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the server closes");
    out
}
