//! The answers to ACME challenges while an order is validated: HTTP-01
//! tokens, served by the HTTP listener before any redirect or route, and
//! TLS-ALPN-01 certificates, served to `acme-tls/1` handshakes on the HTTPS
//! listener. DNS-01 records live in DNS ([`super::dns`]).

use std::sync::Arc;

use dashmap::DashMap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The path prefix of HTTP-01 (RFC 8555 8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenge answers in force, written by orders and read by listeners.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    http: DashMap<Box<str>, Box<str>>,
    /// TLS-ALPN-01: host name → the self-signed certificate with the
    /// `acmeIdentifier` extension.
    alpn: DashMap<Box<str>, Arc<CertifiedKey>>,
}

/// What the HTTP listener answers on [`HTTP01_PREFIX`].
#[derive(Debug, PartialEq, Eq)]
pub enum Http01 {
    /// 200 with this key authorization.
    Answer(String),
    /// 404: a well-formed token no order is waiting on.
    Unknown,
    /// 400: not a base64url token (RFC 8555 8.3: "a random value that
    /// uniquely identifies the challenge ... MUST NOT contain any
    /// characters outside the base64url alphabet").
    Malformed,
}

impl Challenges {
    /// The answer for a request to `/.well-known/acme-challenge/<token>`.
    pub fn http01(&self, token: &str) -> Http01 {
        if !is_base64url(token) {
            return Http01::Malformed;
        }
        match self.http.get(token) {
            Some(key_auth) => Http01::Answer(key_auth.to_string()),
            None => Http01::Unknown,
        }
    }

    /// Publishes an HTTP-01 answer.
    pub fn add_http01(&self, token: &str, key_authorization: &str) {
        self.http.insert(token.into(), key_authorization.into());
    }

    /// Withdraws an HTTP-01 answer.
    pub fn remove_http01(&self, token: &str) {
        self.http.remove(token);
    }

    /// The TLS-ALPN-01 certificate for `host`, if an order awaits it.
    pub fn alpn_cert(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.get(host).map(|c| c.clone())
    }

    /// Publishes the TLS-ALPN-01 certificate for `host`, made for the
    /// SHA-256 `digest` of the key authorization.
    pub fn add_alpn(
        &self,
        host: &str,
        digest: &[u8],
        provider: &CryptoProvider,
    ) -> Result<(), rcgen::Error> {
        let cert = alpn_certificate(host, digest, provider)?;
        self.alpn.insert(host.into(), Arc::new(cert));
        Ok(())
    }

    /// Withdraws the TLS-ALPN-01 certificate for `host`.
    pub fn remove_alpn(&self, host: &str) {
        self.alpn.remove(host);
    }
}

/// A self-signed certificate for `host` carrying the critical
/// `id-pe-acmeIdentifier` extension with `digest` (RFC 8737 3).
fn alpn_certificate(
    host: &str,
    digest: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate
    // with webpki, which refuses the critical extension the CA asks for.
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| rcgen::Error::PemError(e.to_string()))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    ))
}

/// Whether `s` is a non-empty run of base64url characters.
pub fn is_base64url(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_outside_base64url_are_refused() {
        let c = Challenges::default();
        c.add_http01("abc-DEF_123", "abc-DEF_123.thumb");
        assert_eq!(
            c.http01("abc-DEF_123"),
            Http01::Answer("abc-DEF_123.thumb".into())
        );
        assert_eq!(c.http01("abcdef"), Http01::Unknown);
        for bad in ["", "../etc/passwd", "a.b", "a%2e", "a=", "a b", "a/b"] {
            assert_eq!(c.http01(bad), Http01::Malformed, "{bad:?}");
        }
        c.remove_http01("abc-DEF_123");
        assert_eq!(c.http01("abc-DEF_123"), Http01::Unknown);
    }

    #[test]
    fn alpn_certificates_carry_the_digest() {
        let c = Challenges::default();
        let provider = crate::tls::provider();
        c.add_alpn("a.foo.bar", &[7u8; 32], &provider).unwrap();
        let cert = c.alpn_cert("a.foo.bar").expect("published");
        let der = cert.cert[0].as_ref();
        // The extension value is an OCTET STRING of the 32-byte digest.
        let mut needle = vec![0x04, 0x20];
        needle.extend_from_slice(&[7u8; 32]);
        assert!(der.windows(needle.len()).any(|w| w == needle.as_slice()));
        assert!(c.alpn_cert("b.foo.bar").is_none());
    }
}
