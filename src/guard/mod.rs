//! Access control, in the request's policy phase: who may reach a route
//! and how. Allow lists (`branchgate.allow`, `--branch-allow`), the branch
//! gate (`--branch-auth`: one login for every branch environment), HTTP
//! Basic per host as nginx-proxy does it (`--htpasswd DIR`,
//! `branchgate.auth.basic`), and failed-login throttling. A route that
//! asks for none of it costs a few branches on `None`s per request.
//!
//! Order: allow lists (403), then CORS preflights pass ungated, then the
//! gate on hosts under the branch domain (cookie, bypass token or Basic;
//! a browser is sent to the login form), then the route's own Basic auth
//! (401 with nginx-proxy's realm). Every secret is compared in constant
//! time; a client that fails 10 times in a minute is answered 429 for the
//! rest of that minute.

pub mod allow;
pub mod basic;
pub mod files;
pub mod form;
pub mod gate;
pub mod htpasswd;
pub mod signed;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request};

pub use allow::AllowList;
pub use basic::BasicUsers;
use basic::{Check, Verifier};
use files::HtpasswdDir;
use gate::Gate;
use throttle::Throttle;

use crate::routes::Policy;

/// Failed logins a client may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The throttle's window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The access settings of the whole proxy, and its shared state.
#[derive(Debug)]
pub struct Access {
    /// The branch domain, lower case (the gate, `--branch-allow` and
    /// `X-Robots-Tag` cover it and every host under it).
    pub domain: Option<Box<str>>,
    /// `--branch-auth`.
    pub gate: Option<Gate>,
    /// `--branch-allow`.
    pub branch_allow: Option<AllowList>,
    /// `--branch-noindex`.
    pub noindex: bool,
    /// `--htpasswd DIR`.
    pub htpasswd: Option<Arc<HtpasswdDir>>,
    /// `--trust-downstream-proxy`: the client is the last `X-Forwarded-For` address.
    pub trust_downstream: bool,
    /// Failed logins per client.
    pub throttle: Throttle,
    /// Basic checks, with their cache.
    pub verifier: Verifier,
}

impl Access {
    /// Whether a flag restricts some hosts (the gate, `--branch-allow`,
    /// `--htpasswd`): without one, only a route's own policy can, and a
    /// route without any skips the access step altogether.
    pub fn flags_restrict(&self) -> bool {
        self.gate.is_some() || self.branch_allow.is_some() || self.htpasswd.is_some()
    }
}

/// Where the request goes, as the access step needs it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The request's host, normalised.
    pub name: &'a str,
    /// The host pattern of its route as written (`--htpasswd` file names).
    pub pattern: &'a str,
    /// The route's path prefix.
    pub prefix: &'a str,
    /// Found as a branch environment member.
    pub branch: bool,
}

impl<'a> Target<'a> {
    /// A host of branchgate's own (the dashboard host): no route.
    pub fn host(name: &'a str) -> Self {
        Self {
            name,
            pattern: name,
            prefix: "/",
            branch: false,
        }
    }
}

/// What a request that passed presented, to remove before it is forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consumed {
    /// The gate's cookie.
    pub gate_cookie: bool,
    /// `Authorization` the gate checked.
    pub authorization: bool,
    /// `X-Branchgate-Bypass` (never forwarded while a gate exists).
    pub bypass: bool,
}

impl Consumed {
    /// Removes what was consumed from `headers`.
    #[inline]
    pub fn strip(self, headers: &mut HeaderMap) {
        if self.gate_cookie {
            gate::strip_cookie(headers);
        }
        if self.authorization {
            headers.remove(AUTHORIZATION);
        }
        if self.bypass {
            headers.remove(gate::BYPASS);
        }
    }
}

/// Why the access step refused a request.
#[derive(Debug)]
pub enum Refusal {
    /// Not on an allow list (403).
    Forbidden(IpAddr),
    /// Credentials missing or wrong: 401 with this `WWW-Authenticate`.
    Unauthorized(HeaderValue),
    /// A browser at the gate: to the login form (this `Location`).
    Login(HeaderValue),
    /// A wrong bypass token (403).
    WrongBypass,
    /// A CORS preflight to a host that needs credentials: answered by
    /// branchgate itself, never forwarded without them.
    Preflight,
    /// Too many failed logins lately (429).
    Throttled,
}

impl Access {
    /// No restriction anywhere (routes may still ask for theirs).
    pub fn new(domain: Option<&str>) -> Self {
        Self {
            domain: domain.map(|d| d.to_ascii_lowercase().into()),
            gate: None,
            branch_allow: None,
            noindex: true,
            htpasswd: None,
            trust_downstream: false,
            throttle: Throttle::new(MAX_FAILURES, FAILURE_WINDOW),
            verifier: Verifier::default(),
        }
    }

    /// Whether `name` (normalised) is the branch domain or under it.
    pub fn in_domain(&self, name: &str) -> bool {
        let Some(domain) = self.domain.as_deref() else {
            return false;
        };
        name.strip_suffix(domain)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    }

    /// Whether responses for `target` carry `X-Robots-Tag: noindex`.
    pub fn noindex(&self, target: &Target<'_>) -> bool {
        self.noindex && (target.branch || self.in_domain(target.name))
    }

    /// The client's address: the socket peer, or with a trusted downstream
    /// proxy the address it appended last to `X-Forwarded-For` (`ip` or
    /// `ip:port`). `None` when that last entry is not an address: whatever
    /// the client put before it is never taken instead, nor the proxy's own.
    pub fn client(&self, headers: &HeaderMap, peer: IpAddr) -> Option<IpAddr> {
        if !self.trust_downstream {
            return Some(peer);
        }
        let Some(last) = headers.get_all("x-forwarded-for").iter().next_back() else {
            // Not through the proxy at all: the peer is the client.
            return Some(peer);
        };
        let entry = last.as_bytes().rsplit(|b| *b == b',').next()?.trim_ascii();
        let entry = std::str::from_utf8(entry).ok()?;
        entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            .map(|ip| ip.to_canonical())
    }

    /// The access step of the policy phase for a request to `target` on a
    /// route with `policy`, from `peer`.
    pub fn check<B>(
        &self,
        policy: &Policy,
        req: &Request<B>,
        target: &Target<'_>,
        peer: IpAddr,
    ) -> Result<Consumed, Refusal> {
        let headers = req.headers();
        let in_domain = || target.branch || self.in_domain(target.name);
        let gate = self.gate.as_ref().filter(|_| in_domain());
        let branch_allow = self.branch_allow.as_ref().filter(|_| in_domain());
        let route_users = self.route_users(policy, target);
        let mut consumed = Consumed {
            bypass: self.gate.is_some() && headers.contains_key(gate::BYPASS),
            ..Consumed::default()
        };
        if gate.is_none()
            && branch_allow.is_none()
            && policy.allow.is_none()
            && route_users.is_none()
        {
            return Ok(consumed);
        }
        let found = self.client(headers, peer);
        for list in [branch_allow, policy.allow.as_ref()].into_iter().flatten() {
            match found {
                Some(ip) if list.allows(ip) => {}
                _ => return Err(Refusal::Forbidden(found.unwrap_or(peer))),
            }
        }
        // Failures are counted per client; one a trusted proxy could not name
        // counts against the proxy.
        let client = found.unwrap_or(peer);
        // A CORS preflight carries no credentials (Fetch), so it is never
        // refused for lack of them; but it is answered here, not forwarded,
        // where credentials are needed: nothing reaches a container without.
        if req.method() == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return match gate.is_some() || route_users.is_some() {
                true => Err(Refusal::Preflight),
                false => Ok(consumed),
            };
        }
        if let Some(gate) = gate {
            // The gate's cookie never travels on, whether or not it let this
            // request in (expired, its user removed).
            consumed.gate_cookie = form::cookie(headers, gate::COOKIE).is_some();
            self.gate_check(gate, req, client, &mut consumed)?;
        }
        if let Some((users, realm)) = route_users {
            let authorization = headers.get(AUTHORIZATION);
            match self
                .verifier
                .check(&users, authorization, || self.throttle.throttled(client))
            {
                // The route's own Basic passes `Authorization` on, as nginx
                // does, even when the gate checked it too.
                Check::Right => consumed.authorization = false,
                Check::Throttled => return Err(Refusal::Throttled),
                Check::Wrong => {
                    self.throttle.failed(client);
                    return Err(Refusal::Unauthorized(realm.challenge()));
                }
                Check::Missing => return Err(Refusal::Unauthorized(realm.challenge())),
            }
        }
        Ok(consumed)
    }

    fn gate_check<B>(
        &self,
        gate: &Gate,
        req: &Request<B>,
        client: IpAddr,
        consumed: &mut Consumed,
    ) -> Result<(), Refusal> {
        let headers = req.headers();
        if gate.session(headers, signed::unix_now()).is_some() {
            consumed.gate_cookie = true;
            return Ok(());
        }
        let authorization = headers.get(AUTHORIZATION);
        let presented = headers.contains_key(gate::BYPASS) || authorization.is_some();
        if presented && self.throttle.throttled(client) {
            return Err(Refusal::Throttled);
        }
        match gate.bypass(headers) {
            Some(true) => return Ok(()),
            Some(false) => {
                self.throttle.failed(client);
                gate::log_failure(client, None, "wrong bypass token");
                return Err(Refusal::WrongBypass);
            }
            None => {}
        }
        let realm = self.domain.as_deref().unwrap_or("branchgate");
        // Throttling was checked above, before the bypass token.
        match self
            .verifier
            .check(&gate.users.users(), authorization, || false)
        {
            Check::Right => {
                consumed.authorization = true;
                Ok(())
            }
            Check::Throttled => Err(Refusal::Throttled),
            Check::Wrong => {
                self.throttle.failed(client);
                gate::log_failure(client, None, "wrong Basic credentials");
                Err(Refusal::Unauthorized(challenge(&format!(
                    "Restricted {realm}"
                ))))
            }
            Check::Missing if browser(req) => Err(Refusal::Login(login_location(req))),
            Check::Missing => Err(Refusal::Unauthorized(challenge(&format!(
                "Restricted {realm}"
            )))),
        }
    }

    /// The route's own Basic users and the realm of its 401: its label,
    /// else an `--htpasswd` file for its host (and path).
    fn route_users<'t>(
        &self,
        policy: &Policy,
        target: &Target<'t>,
    ) -> Option<(Arc<basic::Users>, Realm<'t>)> {
        if let Some(b) = &policy.basic_auth {
            return Some((b.users.clone(), Realm::Host(target.pattern)));
        }
        let dir = self.htpasswd.as_ref()?;
        let realm = |host, path_file| match path_file {
            true => Realm::Path(host, target.prefix),
            false => Realm::Host(host),
        };
        if let Some((users, path_file)) = dir.find(target.pattern, target.prefix) {
            return Some((users, realm(target.pattern, path_file)));
        }
        if target.pattern == target.name {
            return None;
        }
        let (users, path_file) = dir.find(target.name, target.prefix)?;
        Some((users, realm(target.name, path_file)))
    }
}

/// The realm of a route's Basic auth, as nginx-proxy writes it; made into
/// text only for a 401.
#[derive(Clone, Copy, Debug)]
enum Realm<'a> {
    /// `Restricted <host>`.
    Host(&'a str),
    /// `Restricted <host>/<path>` (a path's own file).
    Path(&'a str, &'a str),
}

impl Realm<'_> {
    fn challenge(self) -> HeaderValue {
        match self {
            Self::Host(host) => challenge(&format!("Restricted {host}")),
            Self::Path(host, path) => challenge(&format!("Restricted {host}/{path}")),
        }
    }
}

/// `Basic realm="…"`, quotes and backslashes escaped.
fn challenge(realm: &str) -> HeaderValue {
    let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("Basic realm=\"{escaped}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"Restricted\""))
}

/// A browser navigating (it gets the login form rather than a Basic prompt).
fn browser<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// `/.branchgate/login?next=<this request's path and query>`.
fn login_location<B>(req: &Request<B>) -> HeaderValue {
    let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    HeaderValue::from_str(&format!(
        "{}?next={}",
        gate::LOGIN,
        form::percent_encode(next)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(gate::LOGIN))
}

/// The file watchers the access settings need, started with the rest.
#[derive(Debug, Default)]
pub struct Watchers {
    gate: Option<files::Watch>,
    htpasswd: Option<files::Watch>,
}

impl Watchers {
    /// Starts the watchers of `access`'s files on `tasks`, until `shutdown`.
    pub fn spawn(
        self,
        access: &Access,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) {
        if let (Some(w), Some(gate)) = (self.gate, &access.gate) {
            tasks.spawn(gate.users.clone().watch(w, shutdown.clone()));
        }
        if let (Some(w), Some(dir)) = (self.htpasswd, &access.htpasswd) {
            tasks.spawn(dir.clone().watch(w, shutdown.clone()));
        }
    }
}

impl Access {
    /// The access settings the flags ask for, their files read once (a bad
    /// one stops start-up naming its flag), and their watchers.
    pub fn from_config(config: &crate::Config) -> anyhow::Result<(Self, Watchers)> {
        use anyhow::Context as _;
        let mut access = Self::new(config.branch_domain.as_deref());
        let mut watchers = Watchers::default();
        access.noindex = config.branch_noindex;
        access.trust_downstream = config.trust_downstream_proxy;
        access.branch_allow = config.branch_allow.clone();
        let domain = config.branch_domain.as_deref();
        if access.branch_allow.is_some() && domain.is_none() {
            anyhow::bail!("--branch-allow: needs --branch-domain (it covers the hosts under it)");
        }
        if let Some(path) = &config.branch_auth {
            let Some(domain) = domain else {
                anyhow::bail!(
                    "--branch-auth: needs --branch-domain (it covers the hosts under it)"
                );
            };
            let (users, watch) = files::UsersFile::open(path.clone())
                .with_context(|| format!("--branch-auth: cannot read {}", path.display()))?;
            if users.users().list.is_empty() {
                anyhow::bail!("--branch-auth: {} has no usable user", path.display());
            }
            let bypass = match &config.branch_auth_bypass_token_file {
                Some(file) => {
                    let text = std::fs::read_to_string(file).with_context(|| {
                        format!(
                            "--branch-auth-bypass-token-file: cannot read {}",
                            file.display()
                        )
                    })?;
                    let token = text.lines().next().unwrap_or_default().trim().to_owned();
                    if token.len() < 16 {
                        anyhow::bail!(
                            "--branch-auth-bypass-token-file: the token in {} must be at least 16 characters",
                            file.display()
                        );
                    }
                    Some(token)
                }
                None => config.branch_auth_bypass_token.clone(),
            };
            let gate = Gate::new(
                Arc::new(users),
                &config.state,
                config.branch_auth_ttl,
                bypass,
                domain,
            )
            .with_context(|| {
                format!(
                    "--state: cannot keep the branch gate's key under {}",
                    config.state.display()
                )
            })?;
            access.gate = Some(gate);
            watchers.gate = Some(watch);
        } else if config.branch_auth_bypass_token.is_some()
            || config.branch_auth_bypass_token_file.is_some()
        {
            anyhow::bail!("--branch-auth-bypass-token: needs --branch-auth");
        }
        if let Some(dir) = &config.htpasswd {
            let (dir, watch) = HtpasswdDir::open(dir.clone()).with_context(|| {
                format!("--htpasswd: cannot read the directory {}", dir.display())
            })?;
            access.htpasswd = Some(Arc::new(dir));
            watchers.htpasswd = Some(watch);
        }
        Ok((access, watchers))
    }
}
