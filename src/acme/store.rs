//! The state directory (`--state`, default `/data`): what ACME must not
//! lose across restarts, laid out per ACME directory so staging and
//! production never mix.
//!
//! ```text
//! STATE/acme/<directory>/account.json     account credentials (0600), created once
//! STATE/acme/<directory>/orders           one line per new order (unix seconds): the hourly budget
//! STATE/acme/<directory>/certs/<id>.crt   issued chains (0644) and their keys, <id>.key (0600)
//! STATE/acme/<directory>/locks/<id>.lock  held (flock) while <id> is ordered
//! STATE/acme/<directory>/status.json      the status of every managed certificate
//! ```
//!
//! Every write is atomic: a temporary file in the same directory, written,
//! fsynced, renamed over the target, and the directory fsynced. A lock file
//! per certificate makes two processes sharing the directory take turns: the
//! second finds the lock held, waits, and then reads what the first stored.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Mode of files holding secrets (keys, account credentials).
pub const SECRET: u32 = 0o600;
/// Mode of public files (certificates, status).
pub const PUBLIC: u32 = 0o644;

/// One ACME directory's part of the state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held per-certificate lock; released on drop (closing the file).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Store {
    /// The part of `state` for the ACME directory at `directory_url`;
    /// creates the folders (0700: they hold keys).
    pub fn open(state: &Path, directory_url: &str) -> io::Result<Self> {
        let root = state.join("acme").join(directory_key(directory_url));
        for dir in [root.clone(), root.join("certs"), root.join("locks")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| with_path(e, &dir))?;
        }
        Ok(Self { root })
    }

    /// The folder of this directory's state.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `account.json`.
    pub fn account_path(&self) -> PathBuf {
        self.root.join("account.json")
    }

    /// The chain and key files of certificate `id`.
    pub fn cert_paths(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = self.root.join("certs");
        (dir.join(format!("{id}.crt")), dir.join(format!("{id}.key")))
    }

    /// The folder of issued certificates.
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// `status.json`.
    pub fn status_path(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// Stores an issued certificate: the key first, then the chain, each
    /// atomically, so a reader that sees the new chain finds its key.
    pub fn save_cert(&self, id: &str, chain_pem: &[u8], key_pem: &[u8]) -> io::Result<()> {
        let (crt, key) = self.cert_paths(id);
        write_atomic(&key, key_pem, SECRET)?;
        write_atomic(&crt, chain_pem, PUBLIC)
    }

    /// Reads a stored certificate's chain and key, if both exist.
    pub fn read_cert(&self, id: &str) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let (crt, key) = self.cert_paths(id);
        match (fs::read(&crt), fs::read(&key)) {
            (Ok(c), Ok(k)) => Ok(Some((c, k))),
            (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            (Err(e), _) => Err(with_path(e, &crt)),
            (_, Err(e)) => Err(with_path(e, &key)),
        }
    }

    /// The ids of every stored certificate.
    pub fn cert_ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.certs_dir())? {
            let name = entry?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".crt")) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Takes the lock of certificate `id` without waiting: `None` while
    /// another process holds it.
    pub fn try_lock(&self, id: &str) -> io::Result<Option<Lock>> {
        self.flock(
            &format!("{id}.lock"),
            FlockOperation::NonBlockingLockExclusive,
        )
    }

    /// Takes the lock named `name`, waiting for other processes (blocking:
    /// call from a blocking thread). For short critical sections only.
    pub fn lock(&self, name: &str) -> io::Result<Lock> {
        self.flock(&format!("{name}.lock"), FlockOperation::LockExclusive)
            .map(|l| l.expect("a blocking lock is taken"))
    }

    fn flock(&self, file_name: &str, op: FlockOperation) -> io::Result<Option<Lock>> {
        let path = self.root.join("locks").join(file_name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(SECRET)
            .open(&path)
            .map_err(|e| with_path(e, &path))?;
        match flock(&file, op) {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(with_path(e.into(), &path)),
        }
    }

    /// Counts one order against `max` per hour, shared by every process on
    /// this directory: `Ok(Err((until, used)))` when the budget is spent
    /// until `until`. Blocking (a lock, a read, an atomic write).
    pub fn spend_order(&self, max: usize, now: i64) -> io::Result<Result<(), (i64, usize)>> {
        let _lock = self.lock("orders")?;
        let recent = self.orders_since(now - 3600);
        if recent.len() >= max {
            let oldest = recent.iter().copied().min().unwrap_or(now);
            return Ok(Err((oldest + 3600, recent.len())));
        }
        self.record_order(now, now - 3600)?;
        Ok(Ok(()))
    }

    /// The times (unix seconds) of the orders placed since `since`.
    pub fn orders_since(&self, since: i64) -> Vec<i64> {
        let text = fs::read_to_string(self.root.join("orders")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.trim().parse::<i64>().ok())
            .filter(|&t| t >= since)
            .collect()
    }

    /// Records an order placed at `at`, forgetting those before `keep_since`.
    pub fn record_order(&self, at: i64, keep_since: i64) -> io::Result<()> {
        let mut times = self.orders_since(keep_since);
        times.push(at);
        let text: String = times.iter().map(|t| format!("{t}\n")).collect();
        write_atomic(&self.root.join("orders"), text.as_bytes(), PUBLIC)
    }
}

/// A folder name for an ACME directory URL: its host, port and path in
/// file-name-safe characters (`acme-v02.api.letsencrypt.org-directory`).
pub fn directory_key(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let key: String = rest
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '-',
        })
        .collect();
    key.trim_matches('-').to_owned()
}

/// Writes `bytes` to `path` atomically with `mode`: a temporary file beside
/// it, fsynced, renamed over `path`, then the folder fsynced so the rename
/// survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only when the file is created: set it anyway, in
        // case a stale temporary file was left with another.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| with_path(e, path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keys_are_private_and_writes_replace_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "https://127.0.0.1:14000/dir").unwrap();
        assert!(store.root().ends_with("acme/127.0.0.1-14000-dir"));
        store.save_cert("a.foo.bar", b"chain", b"key").unwrap();
        store.save_cert("a.foo.bar", b"chain2", b"key2").unwrap();
        let (crt, key) = store.cert_paths("a.foo.bar");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&crt), 0o644);
        assert_eq!(
            store.read_cert("a.foo.bar").unwrap(),
            Some((b"chain2".to_vec(), b"key2".to_vec()))
        );
        assert_eq!(store.cert_ids().unwrap(), vec!["a.foo.bar"]);
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(store.certs_dir()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn a_held_lock_is_not_taken_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "https://ca/dir").unwrap();
        let held = store.try_lock("x").unwrap().expect("free");
        // flock locks belong to the open file: a second open (as another
        // process would) does not get it.
        assert!(store.try_lock("x").unwrap().is_none());
        drop(held);
        assert!(store.try_lock("x").unwrap().is_some());
    }

    #[test]
    fn the_budget_is_spent_then_refused_until_the_oldest_order_is_an_hour_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "https://ca/dir").unwrap();
        assert_eq!(store.spend_order(2, 1000).unwrap(), Ok(()));
        assert_eq!(store.spend_order(2, 1500).unwrap(), Ok(()));
        assert_eq!(store.spend_order(2, 2000).unwrap(), Err((4600, 2)));
        assert_eq!(store.spend_order(2, 4601).unwrap(), Ok(()));
    }

    #[test]
    fn the_order_log_keeps_the_last_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "https://ca/dir").unwrap();
        store.record_order(100, 0).unwrap();
        store.record_order(5000, 0).unwrap();
        store.record_order(5001, 4000).unwrap();
        assert_eq!(store.orders_since(0), vec![5000, 5001]);
        assert_eq!(store.orders_since(5001), vec![5001]);
    }
}
