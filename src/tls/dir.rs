//! `--certs DIR` in nginx-proxy's layout (`<name>.crt` + `<name>.key`,
//! `default.crt` + `default.key`), polled and published whole into the
//! [`CertStore`](super::CertStore) when anything changes: a file added,
//! replaced or removed, or a certificate running out of date.
//!
//! A file is read once it has looked the same on two polls in a row (a copy
//! in progress is never read half-way) and parsed again only when it
//! changed. A pair that cannot serve (a `.crt` without its `.key`, a key that
//! does not match, an unreadable, unparsable or expired certificate) is
//! skipped with one warning naming the file and why; the others keep serving.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CertStore;
use super::certs::{Cert, Certs, DEFAULT_NAME, unix_now};

/// How often the directory is looked at: a change is live within two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What identifies a file's version without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

impl Stamp {
    /// A file that is listed but cannot be looked at.
    const UNREADABLE: Self = Self {
        len: 0,
        mtime_ns: 0,
        ino: 0,
    };

    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// One `<name>.crt` and its `.key`, as last seen.
#[derive(Debug)]
struct Pair {
    /// (crt, key) stamps the result was read from.
    read_from: (Stamp, Option<Stamp>),
    /// The certificate, or why the pair is skipped.
    result: Result<Arc<Cert>, String>,
}

/// The directory and what was read from it.
#[derive(Debug)]
pub struct CertDir {
    path: PathBuf,
    pairs: BTreeMap<String, Pair>,
    /// Stamps seen once, waiting to be seen again before the files are read.
    pending: HashMap<String, (Stamp, Option<Stamp>)>,
    provider: Arc<CryptoProvider>,
    /// Used when the directory has no `default.crt` (the demo's certificate).
    builtin: Option<Arc<Cert>>,
}

impl CertDir {
    /// A directory not read yet.
    pub fn new(path: PathBuf, provider: Arc<CryptoProvider>, builtin: Option<Arc<Cert>>) -> Self {
        Self {
            path,
            pairs: BTreeMap::new(),
            pending: HashMap::new(),
            provider,
            builtin,
        }
    }

    /// Reads the directory now, without waiting for files to settle (start-up).
    pub fn load(&mut self) -> Certs {
        self.poll(true);
        self.certs()
    }

    /// Looks at the directory once: `Some` with the new set when what
    /// serves changed. `settled` reads changed files at once.
    pub fn poll(&mut self, settled: bool) -> Option<Certs> {
        let mut changed = false;
        let seen = self.list();
        let now = unix_now();
        self.pairs.retain(|name, pair| {
            let keep = seen.contains_key(name);
            if !keep && pair.result.is_ok() {
                info!(file = %pair_file(&self.path, name).display(), "certificate removed");
                changed = true;
            }
            keep
        });
        self.pending.retain(|name, _| seen.contains_key(name));
        for (name, stamps) in seen {
            let crt = pair_file(&self.path, &name);
            if let Some(p) = self.pairs.get_mut(&name)
                && p.read_from == stamps
            {
                self.pending.remove(&name);
                // In force, now out of date: drop it, once.
                if let Ok(c) = &p.result
                    && c.expired_at(now)
                {
                    let why = "expired".to_owned();
                    warn!(file = %crt.display(), reason = %why, "certificate skipped");
                    p.result = Err(why);
                    changed = true;
                }
                continue;
            }
            if !settled && self.pending.get(&name) != Some(&stamps) {
                self.pending.insert(name, stamps);
                continue;
            }
            self.pending.remove(&name);
            let result = self.read(&crt, stamps.1.is_some());
            match &result {
                Ok(c) => info!(file = %crt.display(), names = ?c.names, "certificate loaded"),
                Err(why) => warn!(file = %crt.display(), reason = %why, "certificate skipped"),
            }
            let was_ok = self.pairs.get(&name).is_some_and(|p| p.result.is_ok());
            changed |= was_ok || result.is_ok();
            self.pairs.insert(
                name,
                Pair {
                    read_from: stamps,
                    result,
                },
            );
        }
        changed.then(|| self.certs())
    }

    fn read(&self, crt: &Path, has_key: bool) -> Result<Arc<Cert>, String> {
        let key = crt.with_extension("key");
        let chain = std::fs::read(crt).map_err(|e| format!("cannot be read: {e}"))?;
        if !has_key {
            return Err(format!("no {} beside it", file_name(&key)));
        }
        let key_pem =
            std::fs::read(&key).map_err(|e| format!("{} cannot be read: {e}", file_name(&key)))?;
        Cert::parse(crt, &chain, &key_pem, &self.provider).map(Arc::new)
    }

    /// Every `<name>.crt` with the stamps of it and of its `.key`.
    fn list(&self) -> HashMap<String, (Stamp, Option<Stamp>)> {
        let mut out = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let (Some(stem), Some("crt")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            // Follows symlinks, as a mounted volume of links (acme-companion)
            // needs; one that leads nowhere is read, and fails, once.
            let stamp = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(meta) => Stamp::of(&meta),
                Err(_) => Stamp::UNREADABLE,
            };
            let key = std::fs::metadata(path.with_extension("key"))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| Stamp::of(&m));
            out.insert(stem.to_owned(), (stamp, key));
        }
        out
    }

    /// The set that serves now.
    fn certs(&self) -> Certs {
        let mut named = HashMap::new();
        let mut default = None;
        for (name, pair) in &self.pairs {
            let Ok(cert) = &pair.result else { continue };
            if name == DEFAULT_NAME {
                default = Some(cert.clone());
            } else {
                named.insert(name.to_ascii_lowercase().into_boxed_str(), cert.clone());
            }
        }
        Certs::with_builtin(named, default, self.builtin.as_ref())
    }

    /// Polls until `shutdown`, publishing every change into `store`.
    pub async fn watch(mut self, store: Arc<CertStore>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // Reading a few files is quick; a slow volume should not stall a worker.
            let (dir, certs) = match tokio::task::spawn_blocking(move || {
                let certs = self.poll(false);
                (self, certs)
            })
            .await
            {
                Ok(done) => done,
                Err(_) => return,
            };
            self = dir;
            if let Some(certs) = certs {
                info!(certificates = certs.len(), dir = %self.path.display(), "certificates in force");
                store.store(certs);
            }
        }
    }
}

fn pair_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.crt"))
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
