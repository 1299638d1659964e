//! HTTPS: the certificates in force and the TLS handshake of the HTTPS
//! listeners. Sits beside [`crate::routes`]: like the route table, the
//! certificate set is published whole and read without locks.
//!
//! ```text
//! --certs DIR ──poll──▶ dir::CertDir ──store──▶ CertStore (ArcSwap<Certs>)
//!                                                   │ load() per handshake
//! TCP ─▶ accept::handshake (connection's task, under a timeout)
//!          plain HTTP? 400 · ClientHello · SNI checks · certs.select(SNI, route's CERT_NAME)
//!          └─▶ rustls (TLS 1.2/1.3, ALPN h2 + http/1.1, tickets + session cache) ─▶ proxy::server
//! ```

pub mod accept;
pub mod certs;
pub mod dir;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use crate::acme::Acme;
use crate::routes::{Lookup, MAX_HOST_LEN, Reader, normalize_host};
pub use certs::{Cert, Certs};

/// Sessions kept for TLS 1.2 session-id resumption, per process.
const SESSION_CACHE: usize = 4096;

/// The certificates in force: replaced whole, read without locks.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwap<Certs>,
}

impl CertStore {
    /// A store serving `certs`.
    pub fn new(certs: Certs) -> Self {
        Self {
            current: ArcSwap::from_pointee(certs),
        }
    }

    /// The set in force.
    pub fn load(&self) -> arc_swap::Guard<Arc<Certs>> {
        self.current.load()
    }

    /// Replaces the set.
    pub fn store(&self, certs: Certs) {
        self.current.store(Arc::new(certs));
    }
}

/// The HTTPS side of the proxy: the certificate selection and the rustls
/// configuration every HTTPS listener shares.
pub struct Tls {
    /// Chooses a certificate per handshake.
    pub selector: Arc<Selector>,
    config: Arc<ServerConfig>,
    /// TLS-ALPN-01 handshakes (`acme-tls/1`), when ACME runs.
    alpn_config: Option<Arc<ServerConfig>>,
    /// How long a handshake may take, from accept.
    pub handshake_timeout: Duration,
    /// The first HTTPS listener's port: where plain-HTTP requests are redirected.
    pub port: u16,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("certificates", &self.selector.certs.load().len())
            .finish_non_exhaustive()
    }
}

/// The crypto provider every TLS part uses (ring, rustls' safe defaults).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// rustls with its safe defaults (TLS 1.2 and 1.3, forward-secret AEAD
    /// suites only), ALPN `h2` and `http/1.1`, stateless tickets and a
    /// session cache, and certificates chosen per SNI by `selector`.
    pub fn new(
        selector: Arc<Selector>,
        handshake_timeout: Duration,
        port: u16,
    ) -> anyhow::Result<Self> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(selector.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let alpn_config = match &selector.acme {
            Some(acme) => {
                let mut c = ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(AlpnChallenges(acme.clone())));
                c.alpn_protocols = vec![crate::acme::challenge::ACME_TLS_ALPN.to_vec()];
                Some(Arc::new(c))
            }
            None => None,
        };
        Ok(Self {
            selector,
            config: Arc::new(config),
            alpn_config,
            handshake_timeout,
            port,
        })
    }

    /// The shared rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// Chooses the certificate of a handshake: the certificates in force, and
/// the route table for the route's `CERT_NAME`. Also rustls' resolver.
///
/// Order: the files' own / `CERT_NAME` / parent certificate, then one ACME
/// holds for the host (or its wildcard), then `default.crt`.
#[derive(Debug)]
pub struct Selector {
    /// The certificates in force.
    pub certs: Arc<CertStore>,
    routes: Reader,
    /// Certificates ACME obtained, and its challenge answers.
    pub acme: Option<Arc<Acme>>,
}

/// What a handshake is served.
pub enum Selected {
    /// A certificate for the name.
    Named(Arc<CertifiedKey>),
    /// The fallback certificate (`default.crt`): the name has none.
    Fallback(Arc<CertifiedKey>),
    /// Nothing may be served.
    Nothing,
}

impl Selector {
    /// A selector over `certs`, ACME's certificates, and the routes of `routes`.
    pub fn new(certs: Arc<CertStore>, routes: Reader, acme: Option<Arc<Acme>>) -> Self {
        Self {
            certs,
            routes,
            acme,
        }
    }

    /// The certificate for a handshake naming `sni` (`None`: no SNI);
    /// `None` when nothing may be served.
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        match self.choose(sni) {
            Selected::Named(k) | Selected::Fallback(k) => Some(k),
            Selected::Nothing => None,
        }
    }

    /// The certificate for a handshake naming `sni`, and whether it names
    /// the host or is the fallback.
    pub fn choose(&self, sni: Option<&str>) -> Selected {
        let certs = self.certs.load();
        let fallback = || match certs.fallback() {
            Some(c) => Selected::Fallback(c.key.clone()),
            None => Selected::Nothing,
        };
        let mut buf = [0; MAX_HOST_LEN];
        match sni.map(|s| normalize_host(s, &mut buf)) {
            None => fallback(),
            // Not a host name: nothing to serve.
            Some(None) => Selected::Nothing,
            Some(Some(host)) => {
                let snapshot = self.routes.load();
                if let Some(c) = certs.named_for(host, cert_name(&snapshot, host)) {
                    return Selected::Named(c.key.clone());
                }
                if let Some(c) = self.acme.as_ref().and_then(|a| a.cert_for(host)) {
                    return Selected::Named(c.key.clone());
                }
                fallback()
            }
        }
    }
}

/// The `CERT_NAME` of the route serving `host` at `/`, if any (a handshake
/// knows the host, not the path; a host whose routes all sit below `/` uses
/// its own, parent or default certificate).
pub fn cert_name<'a>(snapshot: &'a crate::routes::Snapshot, host: &str) -> Option<&'a str> {
    match snapshot.table().lookup(host, "/") {
        Lookup::Found(route, _) => route.policy.cert_name.as_deref(),
        _ => None,
    }
}

/// Serves TLS-ALPN-01 certificates by SNI.
#[derive(Debug)]
struct AlpnChallenges(Arc<Acme>);

impl ResolvesServerCert for AlpnChallenges {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name()?.to_ascii_lowercase();
        self.0.challenges.alpn_cert(&host)
    }
}

impl ResolvesServerCert for Selector {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name())
    }
}
