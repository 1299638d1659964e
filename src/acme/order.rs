//! One order task, as the manager spawns it: the certificate's lock in the
//! state directory, what another process may have stored meanwhile, the
//! hourly budget, then the challenges in `--acme-challenge` order, and the
//! result stored before it is served. The state directory is written from
//! blocking threads, never from the runtime that serves connections.

use std::sync::Arc;

use instant_acme::Account;
use rustls::crypto::CryptoProvider;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::Acme;
use super::client::{self, Kind, OrderError, Solvers};
use super::store::Store;
use crate::tls::Cert;
use crate::tls::certs::unix_now;

/// What every order task shares.
pub(super) struct Ctx {
    pub(super) acme: Arc<Acme>,
    pub(super) store: Store,
    pub(super) provider: Arc<CryptoProvider>,
    account: Mutex<Option<Account>>,
}

impl Ctx {
    pub(super) fn new(acme: Arc<Acme>, store: Store, provider: Arc<CryptoProvider>) -> Self {
        Self {
            acme,
            store,
            provider,
            account: Mutex::new(None),
        }
    }
}

/// How an order task ended.
pub(super) enum Outcome {
    /// Issued now, or found stored by another process.
    Cert { cert: Arc<Cert>, renew_at: i64 },
    /// Another process holds the lock.
    Locked,
    /// The hourly budget is spent until then.
    Budget { until: i64, used: usize },
    /// Failed.
    Failed(OrderError),
}

/// Runs `f` on a blocking thread (file locks, fsyncs).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Obtains the certificate `id` for `names`; `old` is the one it renews.
pub(super) async fn obtain(
    ctx: Arc<Ctx>,
    id: String,
    names: Vec<String>,
    old: Option<Arc<Cert>>,
) -> Outcome {
    let store = ctx.store.clone();
    let lock_id = id.clone();
    let _lock = match blocking(move || store.try_lock(&lock_id)).await {
        Ok(Some(lock)) => lock,
        Ok(None) => return Outcome::Locked,
        Err(e) => return Outcome::Failed(OrderError::Store(e)),
    };
    // Another process may have stored a newer one while we waited.
    if let Ok(Some(stored)) = load(&ctx.store, &id, &ctx.provider) {
        let newer = old.as_ref().is_none_or(|o| stored.not_after > o.not_after);
        let renew = renew_at(&stored);
        if newer && names.iter().all(|n| stored.covers(n)) && unix_now() < renew {
            return Outcome::Cert {
                cert: stored,
                renew_at: renew,
            };
        }
    }
    let settings = &ctx.acme.settings;
    let kinds: Vec<Kind> = if names.iter().any(|n| n.starts_with("*.")) {
        vec![Kind::Dns01]
    } else {
        settings
            .challenges
            .iter()
            .copied()
            .filter(|k| *k != Kind::Dns01 || settings.dns.is_some())
            .collect()
    };
    let account = match account(&ctx).await {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    let replaces = old
        .as_ref()
        .and_then(|c| c.key.cert.first())
        .and_then(client::cert_identifier);
    let solvers = Solvers {
        challenges: &ctx.acme.challenges,
        dns: settings.dns.as_ref(),
        provider: &ctx.provider,
    };
    let mut last = OrderError::NoDns(names[0].clone());
    for kind in kinds {
        if let Some(spent) = spend_budget(&ctx).await {
            return spent;
        }
        info!(certificate = id, names = ?names, challenge = kind.name(), "ACME order");
        let issued = match client::order(&account, &names, kind, &solvers, replaces.clone()).await {
            Ok(issued) => issued,
            Err(e) if e.is_validation() => {
                warn!(certificate = id, challenge = kind.name(), error = %e, "ACME challenge failed; trying the next one, if any");
                last = e;
                continue;
            }
            Err(e) => {
                if e.account_gone() {
                    forget_account(&ctx).await;
                }
                return Outcome::Failed(e);
            }
        };
        let (crt, _) = ctx.store.cert_paths(&id);
        let cert = match Cert::parse(
            &crt,
            issued.chain.as_bytes(),
            issued.key.as_bytes(),
            &ctx.provider,
        ) {
            Ok(c) => Arc::new(c),
            Err(e) => return Outcome::Failed(OrderError::Unusable(e)),
        };
        let store = ctx.store.clone();
        let save_id = id.clone();
        let saved = blocking(move || {
            store.save_cert(&save_id, issued.chain.as_bytes(), issued.key.as_bytes())
        })
        .await;
        if let Err(e) = saved {
            return Outcome::Failed(OrderError::Store(e));
        }
        let ari = match cert.key.cert.first().and_then(client::cert_identifier) {
            Some(cid) => client::ari_renewal(&account, &cid).await,
            None => None,
        };
        let renew = ari.unwrap_or_else(|| renew_at(&cert));
        return Outcome::Cert {
            cert,
            renew_at: renew,
        };
    }
    Outcome::Failed(last)
}

/// Counts an order against the hourly budget (shared with every process on
/// the state directory), or says until when it is spent.
async fn spend_budget(ctx: &Ctx) -> Option<Outcome> {
    let store = ctx.store.clone();
    let max = ctx.acme.settings.max_orders_per_hour as usize;
    match blocking(move || store.spend_order(max, unix_now())).await {
        Ok(Ok(())) => None,
        Ok(Err((until, used))) => Some(Outcome::Budget { until, used }),
        Err(e) => Some(Outcome::Failed(OrderError::Store(e))),
    }
}

/// The account, restored or created once; creation is locked so two
/// processes starting together register one account.
async fn account(ctx: &Ctx) -> Result<Account, OrderError> {
    let mut slot = ctx.account.lock().await;
    if let Some(a) = &*slot {
        return Ok(a.clone());
    }
    let store = ctx.store.clone();
    let _lock = blocking(move || store.lock("account")).await?;
    let s = &ctx.acme.settings;
    let a = client::account(
        &ctx.store,
        &s.directory,
        s.email.as_deref(),
        s.ca_root.as_deref(),
    )
    .await?;
    *slot = Some(a.clone());
    Ok(a)
}

/// The CA no longer knows the stored account (its database was reset, as
/// Pebble's is on restart): set the credentials aside so the next attempt
/// registers again. Never done for any other error.
async fn forget_account(ctx: &Ctx) {
    *ctx.account.lock().await = None;
    let path = ctx.store.account_path();
    let aside = path.with_extension(format!("json.unknown-{}", unix_now()));
    match std::fs::rename(&path, &aside) {
        Ok(()) => warn!(
            moved_to = %aside.display(),
            "ACME: the CA does not know the stored account; a new one is registered at the next order"
        ),
        Err(e) => warn!(error = %e, "ACME: cannot set the unknown account aside"),
    }
}

/// When a certificate is renewed without ARI: at two thirds of its
/// lifetime, up to a twentieth of the lifetime earlier at random so
/// certificates issued together do not renew together.
pub(super) fn renew_at(cert: &Cert) -> i64 {
    let lifetime = (cert.not_after - cert.not_before).max(0);
    cert.not_before + lifetime * 2 / 3 - super::jitter((lifetime / 20) as u64) as i64
}

/// Reads a stored certificate (`None`: not stored, or expired).
pub(super) fn load(
    store: &Store,
    id: &str,
    provider: &CryptoProvider,
) -> Result<Option<Arc<Cert>>, String> {
    let Some((chain, key)) = store.read_cert(id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (crt, _) = store.cert_paths(id);
    match Cert::parse(&crt, &chain, &key, provider) {
        Ok(c) => Ok(Some(Arc::new(c))),
        // An expired certificate is no error: it is simply not held.
        Err(e) if e.starts_with("expired") => Ok(None),
        Err(e) => Err(format!("{}: {e}", crt.display())),
    }
}
