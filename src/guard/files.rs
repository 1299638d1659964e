//! htpasswd files on disk, watched: `--htpasswd DIR` (nginx-proxy's
//! `/etc/nginx/htpasswd`: a file per host, `<host>`, or per host and path,
//! `<host>_<sha1(path)>`) and `--branch-auth FILE`. Polled once a second;
//! a changed file is parsed again and swapped in whole (one `ArcSwap`), a
//! line that cannot be used is skipped with a warning naming the file and
//! line, and the other users keep working.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ring::digest;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::basic::Users;
use super::htpasswd::Htpasswd;
use super::signed::hex;

/// How often the files are read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The user list of one host, and of some of its paths.
#[derive(Debug, Default)]
pub struct HostFiles {
    /// `<host>`: the whole host.
    whole: Option<Arc<Users>>,
    /// `<host>_<sha1(path)>`: the hex SHA-1 of a `VIRTUAL_PATH`, its users.
    paths: Vec<(Box<str>, Arc<Users>)>,
}

/// What one read of a directory found.
#[derive(Debug, Default)]
struct Index {
    hosts: HashMap<Box<str>, HostFiles>,
}

/// One file's last bytes and what they parsed to.
type Cache = HashMap<PathBuf, (Vec<u8>, Arc<Users>)>;

/// Reads `path` and parses it, reusing the last parse if the bytes did not
/// change; warns once per change about every skipped line.
fn load(path: &Path, cache: &Cache) -> std::io::Result<(Vec<u8>, Arc<Users>)> {
    let bytes = std::fs::read(path)?;
    if let Some((old, users)) = cache.get(path)
        && *old == bytes
    {
        return Ok((bytes, users.clone()));
    }
    let (list, skipped) = Htpasswd::parse(&String::from_utf8_lossy(&bytes));
    for s in skipped {
        warn!(file = %path.display(), line = s.line, reason = %s.reason, "htpasswd line skipped");
    }
    info!(file = %path.display(), users = list.len(), "htpasswd file loaded");
    Ok((bytes, Arc::new(Users::new(list))))
}

/// `--htpasswd DIR`, watched.
#[derive(Debug)]
pub struct HtpasswdDir {
    dir: PathBuf,
    index: ArcSwap<Index>,
}

impl HtpasswdDir {
    /// Reads `dir` once; an unreadable directory is an error (start-up names the flag).
    pub fn open(dir: PathBuf) -> std::io::Result<(Self, Watch)> {
        let mut cache = Cache::new();
        let index = scan(&dir, &mut cache)?;
        let me = Self {
            dir,
            index: ArcSwap::from_pointee(index),
        };
        Ok((me, Watch { cache }))
    }

    /// The list for `host` (a `VIRTUAL_HOST` as written, or the request's
    /// host) and the route's path prefix, and whether it is the path's own
    /// file, which wins over the host's as in nginx-proxy's template. The
    /// SHA-1 is computed only when the host has path files.
    pub fn find(&self, host: &str, prefix: &str) -> Option<(Arc<Users>, bool)> {
        let index = self.index.load();
        let files = index.hosts.get(host)?;
        if !files.paths.is_empty() {
            let sha =
                hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, prefix.as_bytes()).as_ref());
            if let Some((_, users)) = files.paths.iter().find(|(h, _)| **h == *sha) {
                return Some((users.clone(), true));
            }
        }
        Some((files.whole.clone()?, false))
    }

    /// Polls the directory until `shutdown`.
    pub async fn watch(self: Arc<Self>, mut w: Watch, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let dir = self.dir.clone();
            let mut cache = std::mem::take(&mut w.cache);
            let scanned = tokio::task::spawn_blocking(move || {
                let index = scan(&dir, &mut cache);
                (index, cache)
            })
            .await;
            match scanned {
                Ok((Ok(index), cache)) => {
                    w.cache = cache;
                    self.index.store(Arc::new(index));
                }
                Ok((Err(e), cache)) => {
                    w.cache = cache;
                    warn!(dir = %self.dir.display(), error = %e, "--htpasswd directory unreadable; the files in force stay");
                }
                Err(_) => return,
            }
        }
    }
}

/// A watcher's memory of what it read.
#[derive(Debug)]
pub struct Watch {
    cache: Cache,
}

fn scan(dir: &Path, cache: &mut Cache) -> std::io::Result<Index> {
    let mut index = Index::default();
    let mut fresh = Cache::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        // Followed: a link to a file counts; a dangling one is unreadable.
        if name.starts_with('.') || std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let (bytes, users) = match load(&path, cache) {
            Ok(loaded) => loaded,
            // There but unreadable: fail closed, as nginx answers 500. The
            // users it had stay; a file never read lets nobody in.
            Err(e) => {
                warn!(file = %path.display(), error = %e, "htpasswd file unreadable; its host keeps the users last read, or refuses everyone");
                cache
                    .get(&path)
                    .cloned()
                    .unwrap_or_else(|| (Vec::new(), Arc::new(Users::new(Htpasswd::default()))))
            }
        };
        fresh.insert(path, (bytes, users.clone()));
        let lower = name.to_ascii_lowercase();
        match lower.rsplit_once('_') {
            Some((host, sha)) if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let files = index.hosts.entry(host.into()).or_default();
                files.paths.push((sha.into(), users));
            }
            _ => index.hosts.entry(lower.into()).or_default().whole = Some(users),
        }
    }
    *cache = fresh;
    Ok(index)
}

/// `--branch-auth FILE`, watched.
#[derive(Debug)]
pub struct UsersFile {
    path: PathBuf,
    users: ArcSwap<Users>,
}

impl UsersFile {
    /// Reads `path` once; unreadable is an error (start-up names the flag).
    pub fn open(path: PathBuf) -> std::io::Result<(Self, Watch)> {
        let (bytes, users) = load(&path, &Cache::new())?;
        let cache = Cache::from([(path.clone(), (bytes, users.clone()))]);
        let me = Self {
            path,
            users: ArcSwap::new(users),
        };
        Ok((me, Watch { cache }))
    }

    /// The users in force.
    pub fn users(&self) -> arc_swap::Guard<Arc<Users>> {
        self.users.load()
    }

    /// Polls the file until `shutdown`; an unreadable file keeps the users in force.
    pub async fn watch(self: Arc<Self>, mut w: Watch, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let path = self.path.clone();
            let cache = std::mem::take(&mut w.cache);
            let Ok((loaded, cache)) = tokio::task::spawn_blocking(move || {
                let loaded = load(&path, &cache);
                (loaded, cache)
            })
            .await
            else {
                return;
            };
            w.cache = cache;
            match loaded {
                Ok((bytes, users)) => {
                    failing = false;
                    if !Arc::ptr_eq(&users, &self.users.load()) {
                        self.users.store(users.clone());
                    }
                    w.cache = Cache::from([(self.path.clone(), (bytes, users))]);
                }
                Err(e) if !failing => {
                    failing = true;
                    warn!(file = %self.path.display(), error = %e, "--branch-auth file unreadable; the users in force stay");
                }
                Err(_) => {}
            }
        }
    }
}
