//! One order, start to certificate, on instant-acme: the account (created
//! once, then restored from the state directory), the HTTP client it talks
//! through (rustls with ring, Mozilla's roots plus `--acme-ca-root`, a
//! deadline per request), and the order flow: new order → one challenge per
//! authorization → ready → poll → finalize with a fresh key → chain.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tracing::{debug, info};

use super::challenge::Challenges;
use super::dns::{DnsError, DnsSolver};
use super::store::{self, Store};

/// How long one request to the CA may take (a CA that hangs is a CA that is down).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long validation and issuance may take, each.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// A challenge type branchgate can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// HTTP-01 on the HTTP listener.
    Http01,
    /// TLS-ALPN-01 on the HTTPS listener.
    TlsAlpn01,
    /// DNS-01 through `--acme-dns`.
    Dns01,
}

impl Kind {
    /// The name used in `--acme-challenge`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }

    fn acme(self) -> ChallengeType {
        match self {
            Self::Http01 => ChallengeType::Http01,
            Self::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Self::Dns01 => ChallengeType::Dns01,
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http-01" => Ok(Self::Http01),
            "tls-alpn-01" => Ok(Self::TlsAlpn01),
            "dns-01" => Ok(Self::Dns01),
            other => Err(format!(
                "unknown challenge {other:?} (http-01, tls-alpn-01, dns-01)"
            )),
        }
    }
}

/// Why an order did not end in a certificate.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA could not be reached, answered an error, or timed out.
    #[error("ACME server: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA tried the challenge and it failed.
    #[error("{kind} validation failed: {detail}")]
    Validation {
        /// The challenge that failed.
        kind: &'static str,
        /// The CA's words.
        detail: String,
    },
    /// An authorization offers no challenge of this kind (wildcards take DNS-01 only).
    #[error("{name} offers no {kind} challenge")]
    NoChallenge {
        /// The identifier.
        name: String,
        /// The challenge wanted.
        kind: &'static str,
    },
    /// DNS-01 is wanted and `--acme-dns` is not set.
    #[error("{0} needs DNS-01 and --acme-dns is not set")]
    NoDns(String),
    /// Publishing the DNS-01 record failed.
    #[error("DNS-01: {0}")]
    Dns(#[from] DnsError),
    /// The certificate came back unusable.
    #[error("the issued certificate cannot be used: {0}")]
    Unusable(String),
    /// The state directory could not be written.
    #[error("state directory: {0}")]
    Store(#[from] std::io::Error),
}

impl OrderError {
    /// Whether the CA says the account does not exist (RFC 8555 7.3.1).
    pub fn account_gone(&self) -> bool {
        matches!(self, Self::Acme(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
    }

    /// Whether trying the next challenge kind could help.
    pub fn is_validation(&self) -> bool {
        matches!(
            self,
            Self::Validation { .. } | Self::NoChallenge { .. } | Self::Dns(_) | Self::NoDns(_)
        )
    }
}

/// The HTTP client instant-acme talks through: rustls with ring (the stack
/// the listeners use), webpki roots plus the extra ones, and a deadline
/// per request.
struct Http {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

/// The HTTP client for the CA, trusting webpki's roots and `extra_roots` (PEM).
fn http_client(extra_roots: Option<&[u8]>) -> Result<Http, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("holds no PEM certificate".into());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(Http {
        client: HyperClient::builder(TokioExecutor::new()).build(connector),
    })
}

/// Checks `--acme-ca-root` at start-up.
pub fn check_roots(pem: &[u8]) -> Result<(), String> {
    http_client(Some(pem)).map(drop)
}

/// The account: restored from `account.json`, or created once and stored
/// (0600) before anything else is done with it.
pub async fn account(
    store: &Store,
    directory: &str,
    email: Option<&str>,
    extra_roots: Option<&[u8]>,
) -> Result<Account, OrderError> {
    let builder = || {
        http_client(extra_roots)
            .map(|h| Account::builder_with_http(Box::new(h)))
            .map_err(|e| OrderError::Acme(instant_acme::Error::Other(e.into())))
    };
    let path = store.account_path();
    // Only a missing file means "no account yet": any other read error must
    // not lead to registering a second account over the first.
    let existing = match std::fs::read(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(OrderError::Store(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            )));
        }
    };
    if let Some(text) = existing {
        match serde_json::from_slice::<AccountCredentials>(&text) {
            Ok(creds) => return Ok(builder()?.from_credentials(creds).await?),
            Err(e) => {
                return Err(OrderError::Store(std::io::Error::other(format!(
                    "{}: not account credentials ({e}); move it away to create a new account",
                    path.display()
                ))));
            }
        }
    }
    let contact = email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_owned(),
            None,
        )
        .await?;
    let json = serde_json::to_vec_pretty(&creds).map_err(std::io::Error::other)?;
    store::write_atomic(&path, &json, store::SECRET)?;
    info!(account = account.id(), directory, "ACME account created");
    Ok(account)
}

/// What an order answers with.
pub struct Solvers<'a> {
    /// Where HTTP-01 and TLS-ALPN-01 answers are published.
    pub challenges: &'a Challenges,
    /// Where DNS-01 records are published, if anywhere.
    pub dns: Option<&'a DnsSolver>,
    /// The crypto provider (TLS-ALPN-01 certificates).
    pub provider: &'a rustls::crypto::CryptoProvider,
}

/// An issued chain (PEM, leaf first) and its key (PEM, PKCS#8).
pub struct Issued {
    /// The chain.
    pub chain: String,
    /// The key.
    pub key: String,
}

/// A published challenge answer, withdrawn when the order is done.
enum Published {
    Http(String),
    Alpn(String),
    Dns(String, String),
}

/// Orders one certificate for `names`, answering every authorization with
/// `kind` (DNS-01 for wildcards, whatever `kind` says: it is their only
/// challenge). `replaces`: the certificate it renews, for ARI.
pub async fn order(
    account: &Account,
    names: &[String],
    kind: Kind,
    solvers: &Solvers<'_>,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Issued, OrderError> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = match replaces {
        // ARI's `replaces` where the CA offers ARI; instant-acme refuses it
        // up front (no request made) where it does not. A CA that rejects
        // it (already replaced by an earlier attempt, issued to an account
        // since set aside) gets a plain order: a renewal must not stall.
        Some(r) => match account.new_order(&NewOrder::new(&ids).replaces(r)).await {
            Err(instant_acme::Error::Unsupported(_) | instant_acme::Error::Api(_)) => {
                account.new_order(&NewOrder::new(&ids)).await?
            }
            placed => placed?,
        },
        None => account.new_order(&NewOrder::new(&ids)).await?,
    };
    debug!(names = ?names, url = order.url(), "ACME order placed");
    let mut published = Vec::new();
    let result = validate(&mut order, kind, solvers, &mut published).await;
    for p in published {
        match p {
            Published::Http(token) => solvers.challenges.remove_http01(&token),
            Published::Alpn(host) => solvers.challenges.remove_alpn(&host),
            Published::Dns(name, value) => {
                if let Some(dns) = solvers.dns
                    && let Err(e) = dns.cleanup(&name, &value).await
                {
                    tracing::warn!(name, error = %e, "DNS-01: cannot remove the TXT record");
                }
            }
        }
    }
    result?;
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&POLL).await?;
    Ok(Issued { chain, key })
}

async fn validate(
    order: &mut instant_acme::Order,
    kind: Kind,
    solvers: &Solvers<'_>,
    published: &mut Vec<Published>,
) -> Result<(), OrderError> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let name = authz.identifier().to_string();
        let kind = if authz.wildcard { Kind::Dns01 } else { kind };
        let Some(mut challenge) = authz.challenge(kind.acme()) else {
            return Err(OrderError::NoChallenge {
                name,
                kind: kind.name(),
            });
        };
        let key_auth = challenge.key_authorization();
        let base = name.strip_prefix("*.").unwrap_or(&name).to_owned();
        match kind {
            Kind::Http01 => {
                solvers
                    .challenges
                    .add_http01(&challenge.token, key_auth.as_str());
                published.push(Published::Http(challenge.token.clone()));
            }
            Kind::TlsAlpn01 => {
                solvers
                    .challenges
                    .add_alpn(&base, key_auth.digest().as_ref(), solvers.provider)
                    .map_err(|e| OrderError::Unusable(e.to_string()))?;
                published.push(Published::Alpn(base));
            }
            Kind::Dns01 => {
                let dns = solvers.dns.ok_or_else(|| OrderError::NoDns(name.clone()))?;
                let record = format!("_acme-challenge.{base}");
                let value = key_auth.dns_value();
                dns.present(&record, &value).await?;
                published.push(Published::Dns(record, value));
            }
        }
        challenge.set_ready().await?;
    }
    match order.poll_ready(&POLL).await {
        Ok(OrderStatus::Ready | OrderStatus::Valid) => Ok(()),
        Ok(status) => Err(OrderError::Validation {
            kind: kind.name(),
            detail: failure_detail(order)
                .await
                .unwrap_or_else(|| format!("order {status:?}")),
        }),
        // instant-acme reports an order gone invalid with the CA's problem
        // document: the challenge failed (unauthorized, connection, dns, ...).
        Err(instant_acme::Error::Api(problem)) => Err(OrderError::Validation {
            kind: kind.name(),
            detail: problem.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The CA's reason for a failed order: the first failed challenge's
/// problem, else the order's.
async fn failure_detail(order: &mut instant_acme::Order) -> Option<String> {
    let mut detail = order.state().error.as_ref().map(ToString::to_string);
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
            detail = Some(format!(
                "{name}: {}",
                problem.detail.as_deref().unwrap_or("invalid")
            ));
            break;
        }
    }
    detail
}

/// The ARI identifier of a certificate (its AKI and serial), if it has one.
pub fn cert_identifier(leaf: &CertificateDer<'_>) -> Option<CertificateIdentifier<'static>> {
    CertificateIdentifier::try_from(leaf)
        .ok()
        .map(CertificateIdentifier::into_owned)
}

/// The ARI window for a certificate, when the CA offers ARI: a time chosen
/// uniformly inside the suggested window (unix seconds).
pub async fn ari_renewal(account: &Account, id: &CertificateIdentifier<'_>) -> Option<i64> {
    let (info, _) = account.renewal_info(id).await.ok()?;
    let start = info.suggested_window.start.unix_timestamp();
    let end = info.suggested_window.end.unix_timestamp().max(start);
    Some(start + super::jitter((end - start) as u64) as i64)
}
