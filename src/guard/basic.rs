//! HTTP Basic credentials (RFC 7617) checked against an htpasswd user list,
//! with a bounded cache of recent successes: bcrypt costs tens of
//! milliseconds by design, and a browser sends the same `Authorization` on
//! every request, so only the first request of a login pays for the hash.
//! The cache is keyed by the header value itself (the request carries it in
//! memory anyway; a keyed cryptographic hash of it cost more than the rest of
//! the request's policy phase) and remembers which version of which list it
//! passed, so a changed file (a new list) or a removed user is never served
//! from it. The map's hasher is randomly keyed (SipHash), and two values are
//! only compared once their hashes match.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dashmap::DashMap;
use http::HeaderValue;

use super::htpasswd::Htpasswd;

/// Successes remembered at most (then the oldest half is dropped).
const CACHE_MAX: usize = 4096;
/// How long a success is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// An htpasswd user list with an identity: each parse gets a new one, so a
/// cached success belongs to exactly one version of a file or label.
#[derive(Debug)]
pub struct Users {
    id: u64,
    /// The users and their hashes.
    pub list: Htpasswd,
}

impl Users {
    /// Gives `list` a fresh identity.
    pub fn new(list: Htpasswd) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            list,
        }
    }
}

/// `branchgate.auth.basic=user:hash,...`: users parsed once from a label,
/// compared by the label text.
#[derive(Clone, Debug)]
pub struct BasicUsers {
    text: Box<str>,
    /// The users.
    pub users: Arc<Users>,
}

impl PartialEq for BasicUsers {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for BasicUsers {}

impl Hash for BasicUsers {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl FromStr for BasicUsers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let list = Htpasswd::parse_list(s)?;
        if list.is_empty() {
            return Err("no user in the list (expected user:hash,...)".into());
        }
        Ok(Self {
            text: s.trim().into(),
            users: Arc::new(Users::new(list)),
        })
    }
}

impl fmt::Display for BasicUsers {
    /// The user names only: hashes stay out of logs and the dashboard.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .text
            .split(',')
            .filter_map(|e| e.trim().split_once(':').map(|(u, _)| u))
            .collect();
        write!(f, "users {}", names.join(","))
    }
}

/// The user and password of an `Authorization: Basic` value.
pub fn credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let v = value.as_bytes();
    let scheme = v.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v[6..].trim_ascii())
        .ok()?;
    let i = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..i].to_vec()).ok()?;
    Some((user, decoded[i + 1..].to_vec()))
}

/// What a Basic check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// No `Authorization: Basic` at all.
    Missing,
    /// Presented, and wrong (or not Basic-decodable).
    Wrong,
    /// Presented, not recently right, and the client may not try now.
    Throttled,
    /// Right: the user.
    Right,
}

/// Recent successful checks, shared by every list: header value → the
/// lists (by identity) it passed, and when.
#[derive(Debug, Default)]
pub struct Verifier {
    ok: DashMap<Box<[u8]>, Vec<(u64, Instant)>>,
}

impl Verifier {
    /// Checks `authorization` against `users`. A value that passed lately
    /// passes at once; any other is hashed only if `throttled` says the
    /// client may try (a right password is not a guess to throttle once
    /// known, and the common request costs no throttle lookup).
    pub fn check(
        &self,
        users: &Users,
        authorization: Option<&HeaderValue>,
        throttled: impl FnOnce() -> bool,
    ) -> Check {
        let Some(value) = authorization else {
            return Check::Missing;
        };
        let key = value.as_bytes();
        if self.ok.get(key).is_some_and(|passed| {
            passed
                .iter()
                .any(|(id, at)| *id == users.id && at.elapsed() < CACHE_TTL)
        }) {
            return Check::Right;
        }
        if throttled() {
            return Check::Throttled;
        }
        let Some((user, password)) = credentials(value) else {
            return Check::Wrong;
        };
        if !users.list.verify(&user, &password) {
            return Check::Wrong;
        }
        let now = Instant::now();
        if self.ok.len() >= CACHE_MAX {
            self.ok.retain(|_, passed| {
                passed.retain(|(_, at)| now.duration_since(*at) < CACHE_TTL / 2);
                !passed.is_empty()
            });
            if self.ok.len() >= CACHE_MAX {
                self.ok.clear();
            }
        }
        let mut passed = self.ok.entry(key.into()).or_default();
        passed.retain(|(id, at)| *id != users.id && now.duration_since(*at) < CACHE_TTL);
        passed.push((users.id, now));
        Check::Right
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {b64}")).unwrap()
    }

    #[test]
    fn right_wrong_and_missing_with_the_cache_per_list() {
        // {SHA} of "secret".
        let entry = "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
        let users = Users::new(Htpasswd::parse(entry).0);
        let v = Verifier::default();
        assert_eq!(v.check(&users, None, || false), Check::Missing);
        assert_eq!(
            v.check(&users, Some(&basic("ann", "secret")), || false),
            Check::Right
        );
        assert_eq!(
            v.check(&users, Some(&basic("ann", "secret")), || false),
            Check::Right,
            "cached"
        );
        assert_eq!(
            v.check(&users, Some(&basic("ann", "nope")), || false),
            Check::Wrong
        );
        assert_eq!(
            v.check(&users, Some(&basic("bob", "secret")), || false),
            Check::Wrong
        );
        let junk = HeaderValue::from_static("Basic !!!");
        assert_eq!(v.check(&users, Some(&junk), || false), Check::Wrong);
        // A new version of the file without ann: the cached success does not carry over.
        let reloaded = Users::new(Htpasswd::parse("bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").0);
        assert_eq!(
            v.check(&reloaded, Some(&basic("ann", "secret")), || false),
            Check::Wrong
        );
        assert_eq!(
            credentials(&basic("a", "b:c")),
            Some(("a".into(), b"b:c".to_vec()))
        );
    }

    #[test]
    fn label_lists_show_names_only() {
        let b: BasicUsers = "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=".parse().unwrap();
        assert_eq!(b.to_string(), "users ann");
        assert!("".parse::<BasicUsers>().is_err());
    }
}
