//! The branch gate (`--branch-auth FILE`): one login for every host under
//! the branch domain. A login sets one cookie for the whole domain
//! (`Domain=DOMAIN; HttpOnly; SameSite=Lax`, `Secure` over TLS), signed
//! with a key kept in the state directory so logins survive a restart;
//! its payload is the user, so removing the user from the file ends their
//! sessions. Non-browser clients may send Basic credentials instead, and
//! automation `X-Branchgate-Bypass: <token>`.
//!
//! The gate's own pages live under `/.branchgate/` on every gated host:
//! `GET login` (the form), `POST login`, `POST logout`.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use ring::hmac;

use super::files::UsersFile;
use super::form;
use super::signed;
use super::throttle::constant_time_eq;

/// The login cookie's name.
pub const COOKIE: &str = "branchgate_gate";
/// The header automation sends instead of logging in.
pub const BYPASS: &str = "x-branchgate-bypass";
/// Where the gate's own pages are, on every gated host.
pub const PREFIX: &str = "/.branchgate/";
/// The login form.
pub const LOGIN: &str = "/.branchgate/login";
/// Logging out.
pub const LOGOUT: &str = "/.branchgate/logout";

/// How a request got through the gate (what to strip before forwarding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// A valid login cookie.
    Cookie,
    /// Basic credentials of a gate user.
    Basic,
    /// The bypass token.
    Bypass,
}

/// Why a request did not get through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Nothing presented (or an expired cookie): log in.
    Login,
    /// Wrong Basic credentials.
    WrongCredentials,
    /// A bypass header with the wrong token.
    WrongBypass,
}

/// The gate's users, signing key, and bypass token.
#[derive(Debug)]
pub struct Gate {
    /// The users, watched.
    pub users: Arc<UsersFile>,
    key: hmac::Key,
    /// How long a login lasts.
    pub ttl: Duration,
    bypass: Option<Box<[u8]>>,
    /// The cookie's `Domain` (the branch domain).
    domain: Box<str>,
}

impl Gate {
    /// A gate for `domain` with `users`, its key in `state/auth/gate.key`
    /// (made on first use, 0600).
    pub fn new(
        users: Arc<UsersFile>,
        state: &Path,
        ttl: Duration,
        bypass: Option<String>,
        domain: &str,
    ) -> std::io::Result<Self> {
        let key = load_or_make_key(&state.join("auth").join("gate.key"))?;
        Ok(Self {
            users,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl,
            bypass: bypass.map(|b| b.into_bytes().into_boxed_slice()),
            domain: domain.into(),
        })
    }

    /// Whether the bypass header (if any) holds the token. `None`: no header.
    pub fn bypass(&self, headers: &HeaderMap) -> Option<bool> {
        let presented = headers.get(BYPASS)?;
        Some(
            self.bypass
                .as_deref()
                .is_some_and(|t| constant_time_eq(presented.as_bytes(), t)),
        )
    }

    /// The user of a valid login cookie, if the request carries one.
    pub fn session(&self, headers: &HeaderMap, now: u64) -> Option<String> {
        let value = form::cookie(headers, COOKIE)?;
        let user = form::percent_decode(signed::verify(&self.key, value, now)?.as_bytes());
        self.users.users().list.contains(&user).then_some(user)
    }

    /// The `Set-Cookie` value of a login of `user` from `now`.
    pub fn login_cookie(&self, user: &str, now: u64, tls: bool) -> String {
        let value = signed::sign(
            &self.key,
            &form::percent_encode(user),
            now + self.ttl.as_secs(),
        );
        format!(
            "{COOKIE}={value}; Domain={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            self.domain,
            self.ttl.as_secs(),
            if tls { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends a login.
    pub fn logout_cookie(&self, tls: bool) -> String {
        format!(
            "{COOKIE}=; Domain={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            self.domain,
            if tls { "; Secure" } else { "" }
        )
    }
}

/// Removes the gate's cookie from the `Cookie` headers, keeping the others.
pub fn strip_cookie(headers: &mut HeaderMap) {
    use http::header::COOKIE as COOKIE_HEADER;
    let kept: Vec<String> = headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').is_none_or(|(n, _)| n != COOKIE))
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE_HEADER);
    if !kept.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(COOKIE_HEADER, v);
    }
}

/// Reads the signing key, or makes one (32 random bytes, written
/// atomically with mode 0600).
fn load_or_make_key(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is shorter than 32 bytes; delete it to make a new key",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = vec![0; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".gate.key.{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    // Two processes starting at once: the first rename wins, both read it.
    if let Err(e) = std::fs::hard_link(&tmp, path)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_file(&tmp);
    std::fs::read(path)
}

/// Logs a refused login attempt (for fail2ban and the like).
pub fn log_failure(client: IpAddr, user: Option<&str>, why: &str) {
    tracing::info!(%client, user = user.unwrap_or("-"), why, "branch gate login failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(dir: &Path) -> Gate {
        let file = dir.join("users");
        std::fs::write(&file, "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
        let (users, _) = UsersFile::open(file).unwrap();
        Gate::new(
            Arc::new(users),
            dir,
            Duration::from_secs(60),
            Some("t".repeat(20)),
            "foo.bar",
        )
        .unwrap()
    }

    #[test]
    fn cookies_carry_the_user_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path());
        let set = g.login_cookie("ann", 1000, true);
        assert!(set.contains("Domain=foo.bar; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"));
        let value = set.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("a=1; {value}").parse().unwrap(),
        );
        assert_eq!(g.session(&h, 1001).as_deref(), Some("ann"));
        assert_eq!(g.session(&h, 1060), None, "expired");
        // The same key after a restart; 0600.
        let again = gate(dir.path());
        assert_eq!(again.session(&h, 1001).as_deref(), Some("ann"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("auth/gate.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A user no longer in the file has no session.
        let bob = g.login_cookie("bob", 1000, false);
        h.insert(
            http::header::COOKIE,
            bob.split(';').next().unwrap().parse().unwrap(),
        );
        assert_eq!(g.session(&h, 1001), None);
        assert!(!g.logout_cookie(false).contains("Secure"));
    }

    #[test]
    fn bypass_and_cookie_stripping() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path());
        let mut h = HeaderMap::new();
        assert_eq!(g.bypass(&h), None);
        h.insert(BYPASS, "t".repeat(20).parse().unwrap());
        assert_eq!(g.bypass(&h), Some(true));
        h.insert(BYPASS, "t".repeat(19).parse().unwrap());
        assert_eq!(g.bypass(&h), Some(false));
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; branchgate_gate=x.1.ff; b=2".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "branchgate_gate=y".parse().unwrap());
        strip_cookie(&mut h);
        assert_eq!(h.get_all(http::header::COOKIE).iter().count(), 1);
        assert_eq!(h[http::header::COOKIE], "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(http::header::COOKIE, "branchgate_gate=y".parse().unwrap());
        strip_cookie(&mut only);
        assert!(only.get(http::header::COOKIE).is_none());
    }
}
