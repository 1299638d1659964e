//! Certificates as served: one parsed [`Cert`] per file pair, and the set in
//! force ([`Certs`]) with the selection rule nginx-proxy users know.
//!
//! For a host, the first of these that exists **and whose SANs cover the
//! host** is served: `<host>.crt`, the route's `CERT_NAME` (`<name>.crt`),
//! the parent domain one level up (`a.foo.bar` → `foo.bar.crt`), and for
//! everything else `default.crt`, whatever names it holds (nginx's default
//! server certificate).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The name of the fallback certificate's files (`default.crt`, `default.key`).
pub const DEFAULT_NAME: &str = "default";

/// One certificate chain and its key, parsed and checked.
#[derive(Debug)]
pub struct Cert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf's subjectAltName, lower case (`*.` wildcards kept).
    pub names: Names,
    /// The leaf's issuer, as `CN=..., O=...`.
    pub issuer: String,
    /// Where it came from (for logs).
    pub file: PathBuf,
    /// The leaf's `notBefore`, in seconds since the epoch.
    pub not_before: i64,
    /// The leaf's `notAfter`, in seconds since the epoch.
    pub not_after: i64,
}

impl Cert {
    /// Parses a PEM chain (leaf first) and a PEM key (PKCS#8, PKCS#1 or SEC1),
    /// and checks that they belong together and that the leaf is in date.
    pub fn parse(
        file: &Path,
        chain_pem: &[u8],
        key_pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM certificate chain ({e})"))?;
        let Some(leaf) = chain.first() else {
            return Err("holds no certificate".into());
        };
        let Leaf {
            names,
            issuer,
            not_before,
            not_after,
        } = leaf_facts(leaf)?;
        let now = unix_now();
        if not_after < now {
            return Err(format!("expired {} ago", ago(now - not_after)));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            format!("its .key holds no private key in PKCS#8, PKCS#1 or SEC1 PEM ({e})")
        })?;
        let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "its .key does not belong to the certificate".to_owned()
            }
            e => format!("its .key cannot be used: {e}"),
        })?;
        Ok(Self {
            key: Arc::new(key),
            names,
            issuer,
            file: file.to_owned(),
            not_before,
            not_after,
        })
    }

    /// Whether the SANs cover `host` (lower case): an exact name, or a
    /// `*.parent` wildcard for exactly one label more than `parent`.
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_covers(n, host))
    }

    /// Whether it is past its `notAfter` at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.not_after < now
    }
}

/// Whether the SAN `name` covers `host` (both lower case).
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

/// DNS names, lower case.
type Names = Box<[Box<str>]>;

/// What the API and selection read off a leaf.
struct Leaf {
    names: Names,
    issuer: String,
    not_before: i64,
    not_after: i64,
}

/// The leaf's DNS SANs, issuer, `notBefore` and `notAfter`.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<Leaf, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("the first certificate does not parse ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(
                    d.trim_end_matches('.')
                        .to_ascii_lowercase()
                        .into_boxed_str(),
                );
            }
        }
    }
    let validity = cert.validity();
    Ok(Leaf {
        names: names.into(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Every certificate in force, replaced whole on a change.
#[derive(Debug, Default)]
pub struct Certs {
    /// By file name without `.crt`, lower case.
    named: HashMap<Box<str>, Arc<Cert>>,
    /// `default.crt`, else the built-in one (`--demo`).
    default: Option<Arc<Cert>>,
}

impl Certs {
    /// A set from named certificates and the fallback.
    pub fn new(named: HashMap<Box<str>, Arc<Cert>>, default: Option<Arc<Cert>>) -> Self {
        Self { named, default }
    }

    /// Like [`Certs::new`], plus a built-in certificate (the demo's, for
    /// `localhost` and `*.localhost`): named after its first name unless a
    /// file has that name, and the fallback unless there is `default.crt`.
    pub fn with_builtin(
        mut named: HashMap<Box<str>, Arc<Cert>>,
        default: Option<Arc<Cert>>,
        builtin: Option<&Arc<Cert>>,
    ) -> Self {
        if let Some(b) = builtin
            && let Some(first) = b.names.first()
        {
            named.entry(first.clone()).or_insert_with(|| b.clone());
        }
        Self::new(named, default.or_else(|| builtin.cloned()))
    }

    /// No certificate at all: every handshake is refused.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.default.is_none()
    }

    /// How many certificates (the fallback included).
    pub fn len(&self) -> usize {
        self.named.len() + usize::from(self.default.is_some())
    }

    /// Every named certificate, by file base name.
    pub fn named(&self) -> impl Iterator<Item = (&str, &Arc<Cert>)> {
        self.named.iter().map(|(n, c)| (&**n, c))
    }

    /// The fallback certificate: for clients without SNI and unknown names.
    pub fn fallback(&self) -> Option<&Arc<Cert>> {
        self.default.as_ref()
    }

    /// The certificate for `host` (lower case, no port), given the route's
    /// `CERT_NAME`: its own, the named one, the parent's, each only if it
    /// covers `host`; else the fallback.
    pub fn select(&self, host: &str, cert_name: Option<&str>) -> Option<&Arc<Cert>> {
        self.named_for(host, cert_name).or(self.default.as_ref())
    }

    /// The first of `<host>`, `cert_name` and the parent domain's
    /// certificate that covers `host`: [`Certs::select`] without the default.
    pub fn named_for(&self, host: &str, cert_name: Option<&str>) -> Option<&Arc<Cert>> {
        let covering = |name: &str| self.named.get(name).filter(|c| c.covers(host));
        covering(host)
            .or_else(|| cert_name.and_then(covering))
            .or_else(|| {
                host.split_once('.')
                    .and_then(|(_, parent)| covering(parent))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("a.foo.bar", "a.foo.bar"));
        assert!(!name_covers("a.foo.bar", "b.foo.bar"));
        assert!(name_covers("*.foo.bar", "fe.foo.bar"));
        assert!(!name_covers("*.foo.bar", "foo.bar"));
        assert!(!name_covers("*.foo.bar", "fe.be.foo.bar"));
        assert!(!name_covers("*.foo.bar", ".foo.bar"));
    }
}
