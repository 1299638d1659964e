//! Command-line flags, each also read from `BRANCHGATE_<FLAG>`, validated
//! once at start-up: the start of the flow (`main` → [`Config`] →
//! [`crate::bind`]). A bad flag is an error value here; `main` prints it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::routes::{MAX_HOST_LEN, normalize_host};

/// Operator log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Access log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccessLogFormat {
    /// No access log.
    Off,
    /// Common Log Format plus host, upstream and duration.
    Common,
    /// One JSON object per request.
    Json,
}

/// branchgate: a Docker-aware reverse proxy for per-branch preview environments.
#[derive(Clone, Debug, Parser)]
#[command(name = "branchgate", version, about, long_about = None)]
pub struct Config {
    /// Address of an HTTP listener (HTTP/1.1 and h2c). Repeatable, or a
    /// comma list, to listen on several addresses. Default 0.0.0.0:80
    /// (127.0.0.1:8080 with --demo).
    #[arg(
        long,
        env = "BRANCHGATE_HTTP",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub http: Vec<SocketAddr>,

    /// Address of an HTTPS listener (TLS 1.2/1.3, HTTP/1.1 and h2 by ALPN), or `off`. Repeatable,
    /// or a comma list. Default 0.0.0.0:443 (127.0.0.1:8443 with --demo).
    #[arg(long, env = "BRANCHGATE_HTTPS", value_name = "ADDR|off", value_delimiter = ',',
          value_parser = parse_listen)]
    pub https: Vec<Listen>,

    /// Certificate directory in nginx-proxy's layout: `<host>.crt` + `<host>.key`, `default.crt`
    /// + `default.key`. Watched: files added, replaced or removed are live within 2 s.
    #[arg(long, env = "BRANCHGATE_CERTS", value_name = "DIR")]
    pub certs: Option<PathBuf>,

    /// Status of the HTTP→HTTPS redirect for methods other than GET and HEAD (nginx-proxy's
    /// NON_GET_REDIRECT): 301, 302, 303, 307 or 308. 307/308 keep the method and body.
    #[arg(long, env = "BRANCHGATE_NON_GET_REDIRECT", value_name = "CODE", default_value = "301",
          value_parser = parse_redirect)]
    pub non_get_redirect: u16,

    /// Obtain and renew certificates with ACME (on by default wherever an HTTPS listener is,
    /// off with --demo): for LETSENCRYPT_HOST / ACME_HOST containers, `branchgate.tls=acme`,
    /// --acme-all-hosts, and branch environments. `off` for air-gapped servers.
    #[arg(long, env = "BRANCHGATE_ACME", value_name = "on|off", value_parser = parse_on_off)]
    pub acme: Option<bool>,

    /// ACME directory URL. Default: Let's Encrypt production.
    #[arg(long, env = "BRANCHGATE_ACME_DIRECTORY", value_name = "URL", value_parser = parse_https_url,
          conflicts_with = "acme_staging")]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, generous limits): try a
    /// setup here first.
    #[arg(long, env = "BRANCHGATE_ACME_STAGING", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub acme_staging: bool,

    /// Contact e-mail of the ACME account (expiry notices).
    #[arg(long, env = "BRANCHGATE_ACME_EMAIL", value_name = "EMAIL", value_parser = parse_email)]
    pub acme_email: Option<String>,

    /// Extra root certificate(s), PEM, trusted for the ACME server's own HTTPS (Pebble, a
    /// private CA).
    #[arg(long, env = "BRANCHGATE_ACME_CA_ROOT", value_name = "PEM")]
    pub acme_ca_root: Option<PathBuf>,

    /// State directory: the ACME account, issued certificates and keys (0600), the order log.
    /// Mount it as a volume so a restart orders nothing.
    #[arg(
        long,
        env = "BRANCHGATE_STATE",
        value_name = "DIR",
        default_value = "/data"
    )]
    pub state: PathBuf,

    /// Challenges to try for names that are not wildcards, in order; a failing one falls back
    /// to the next. Default: tls-alpn-01,http-01. Wildcards always take dns-01.
    #[arg(
        long,
        env = "BRANCHGATE_ACME_CHALLENGE",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub acme_challenge: Vec<crate::acme::Kind>,

    /// DNS-01 solver: `rfc2136://SERVER:PORT` (BIND, Knot, PowerDNS; with --acme-dns-tsig) or
    /// `exec:/path/to/script` (called with `present|cleanup NAME VALUE`). Turns branch
    /// environments into wildcard certificates.
    #[arg(long, env = "BRANCHGATE_ACME_DNS", value_name = "SPEC")]
    pub acme_dns: Option<String>,

    /// TSIG key for --acme-dns rfc2136://: `NAME:ALGORITHM:SECRET-FILE` (hmac-sha256, ...).
    #[arg(long, env = "BRANCHGATE_ACME_DNS_TSIG", value_name = "NAME:ALG:FILE")]
    pub acme_dns_tsig: Option<String>,

    /// Obtain a certificate for every exact host that routes, not only labelled ones.
    #[arg(long, env = "BRANCHGATE_ACME_ALL_HOSTS", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub acme_all_hosts: bool,

    /// How long the first handshake for a branch host waits while its certificate is issued
    /// (on-demand, without DNS-01).
    #[arg(long, env = "BRANCHGATE_ACME_ON_DEMAND_TIMEOUT", value_name = "DURATION",
          default_value = "20s", value_parser = parse_timeout)]
    pub acme_on_demand_timeout: Duration,

    /// New ACME orders allowed in any hour, renewals included (Let's Encrypt allows 300 per 3
    /// hours and 50 certificates per domain per week).
    #[arg(long, env = "BRANCHGATE_ACME_MAX_ORDERS_PER_HOUR", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=300))]
    pub acme_max_orders_per_hour: u32,

    /// Wait after a failed order before the next try for that certificate; doubled per
    /// failure, at most a day (Let's Encrypt allows 5 failed validations per host per hour).
    #[arg(long, env = "BRANCHGATE_ACME_RETRY", value_name = "DURATION", default_value = "30m",
          value_parser = parse_timeout)]
    pub acme_retry: Duration,

    /// Admin listener: health, readiness and the JSON API, or `off`. Any address other than
    /// loopback needs --admin-token.
    #[arg(long, env = "BRANCHGATE_ADMIN", value_name = "ADDR|off", default_value = "127.0.0.1:8081",
          value_parser = parse_listen)]
    pub admin: Listen,

    /// Bearer token every admin API request must carry (at least 16 characters).
    #[arg(
        long,
        env = "BRANCHGATE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Also serve the dashboard and admin API on the main listeners for this host (same
    /// token and login; over HTTPS with the host's certificate). Needs --admin-token.
    #[arg(long, env = "BRANCHGATE_DASHBOARD_HOST", value_name = "HOST",
          value_parser = parse_host_name)]
    pub dashboard_host: Option<String>,

    /// Count requests for Prometheus (`/metrics` on the admin listener).
    #[arg(long, env = "BRANCHGATE_METRICS", value_name = "on|off", default_value = "on",
          value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// `/metrics` needs the admin token too (by default it is open, as scrapers expect).
    #[arg(long, env = "BRANCHGATE_METRICS_AUTH", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_auth: bool,

    /// Static routes file (TOML), watched for changes.
    #[arg(long, env = "BRANCHGATE_ROUTES", value_name = "FILE")]
    pub routes: Option<PathBuf>,

    /// Docker engine to watch: unix:///PATH, tcp://HOST:PORT (TLS with DOCKER_TLS_VERIFY and
    /// DOCKER_CERT_PATH), http:// or https://. Default: DOCKER_HOST, else unix:///var/run/docker.sock.
    #[arg(long, env = "BRANCHGATE_DOCKER", value_name = "URL", value_parser = parse_docker_url)]
    pub docker: Option<String>,

    /// Do not watch Docker (routes come from --routes / --demo only).
    #[arg(long, env = "BRANCHGATE_NO_DOCKER", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_docker: bool,

    /// Reach containers only at their address on this Docker network (name or id). Default: a
    /// network shared with branchgate's own container, or on the host the first network by name.
    #[arg(long, env = "BRANCHGATE_NETWORK", value_name = "NAME")]
    pub network: Option<String>,

    /// Serve hosts that match no route from this host's routes (nginx-proxy's DEFAULT_HOST).
    #[arg(long, env = "BRANCHGATE_DEFAULT_HOST", value_name = "HOST", value_parser = parse_host)]
    pub default_host: Option<String>,

    /// Keep incoming X-Forwarded-* headers (and append to X-Forwarded-For) instead of overwriting them.
    #[arg(long, env = "BRANCHGATE_TRUST_DOWNSTREAM_PROXY", value_name = "BOOL",
          num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_downstream_proxy: bool,

    /// Upstream TCP (+TLS) connect timeout.
    #[arg(long, env = "BRANCHGATE_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,

    /// How long to wait for an upstream's response headers.
    #[arg(long, env = "BRANCHGATE_RESPONSE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub response_timeout: Duration,

    /// How long a connection may wait for a complete request head, counted from accept or from the
    /// end of the previous response (so also the idle keep-alive timeout).
    #[arg(long, env = "BRANCHGATE_CLIENT_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub client_header_timeout: Duration,

    /// How long a client may pause between two reads of its request body (nginx's
    /// `client_body_timeout`); a stalled upload is answered 408 and both connections close.
    #[arg(long, env = "BRANCHGATE_CLIENT_BODY_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub client_body_timeout: Duration,

    /// How long a client may take no response bytes while some wait to be sent (nginx's
    /// `send_timeout`); then the connection is closed.
    #[arg(long, env = "BRANCHGATE_CLIENT_SEND_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub client_send_timeout: Duration,

    /// How long an upstream may pause between two reads of its response body (nginx's
    /// `proxy_read_timeout`); a stalled response is cut and both connections close.
    #[arg(long, env = "BRANCHGATE_UPSTREAM_READ_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub upstream_read_timeout: Duration,

    /// Client connections held open at once by the whole process. At the cap, the connections
    /// idle longest are closed to make room; only when none is idle are new ones refused.
    /// Default: half of RLIMIT_NOFILE less 64, leaving a descriptor per client for its upstream.
    #[arg(long, env = "BRANCHGATE_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Accepted connections start with delayed ACKs, so a new connection's first request is
    /// acknowledged by its answer (HAProxy's `tcp-smart-accept`): one packet less per connection.
    /// `false` for clients that write one request in two small writes without TCP_NODELAY (they
    /// would wait about 40 ms for their first answer).
    #[arg(long, env = "BRANCHGATE_SMART_ACCEPT", value_name = "BOOL",
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub smart_accept: bool,

    /// A new connection wakes branchgate only once its first bytes have arrived (a request, a
    /// TLS ClientHello): Linux's `TCP_DEFER_ACCEPT`, nginx's `listen ... deferred`, HAProxy's
    /// `defer-accept`. One wake-up less per connection. A client that connects and sends
    /// nothing is accepted after about a second, then `--client-header-timeout` applies.
    /// `false` for clients that wait for the server to speak first (no HTTP or TLS client does).
    #[arg(long, env = "BRANCHGATE_DEFER_ACCEPT", value_name = "BOOL",
          num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub defer_accept: bool,

    /// Forward request headers whose names contain `_` (nginx's `underscores_in_headers`).
    /// Off by default: `X_Forwarded_For` reads as `X-Forwarded-For` to some servers.
    #[arg(long, env = "BRANCHGATE_ALLOW_UNDERSCORE_HEADERS", value_name = "BOOL",
          num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_underscore_headers: bool,

    /// How long an idle upstream keep-alive connection is kept for reuse.
    #[arg(long, env = "BRANCHGATE_UPSTREAM_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub upstream_idle_timeout: Duration,

    /// How long shutdown waits for in-flight requests (below docker stop's 10 s).
    #[arg(long, env = "BRANCHGATE_GRACE_PERIOD", value_name = "DURATION", default_value = "8s", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// Turn on branch environments under this domain: `<fe>.<be>.DOMAIN`, `<fe>.DOMAIN`, and the
    /// environment matrix at `DOMAIN`.
    #[arg(long, env = "BRANCHGATE_BRANCH_DOMAIN", value_name = "DOMAIN", value_parser = parse_branch_domain)]
    pub branch_domain: Option<String>,

    /// Path prefix that goes to the backend branch (whole segments; repeat for several).
    #[arg(long = "api-prefix", env = "BRANCHGATE_API_PREFIX", value_name = "PATH",
          default_value = "/api", value_delimiter = ',', value_parser = parse_api_prefix)]
    pub api_prefixes: Vec<String>,

    /// Backend branch for `<fe>.DOMAIN` API paths.
    #[arg(
        long,
        env = "BRANCHGATE_DEFAULT_BRANCH",
        value_name = "NAME",
        default_value = "main"
    )]
    pub default_branch: String,

    /// Also allow this origin (`https://app.example.com`) on `branchgate.cors` routes, besides the
    /// branch domain and its subdomains (repeat for several).
    #[arg(long = "cors-origin", env = "BRANCHGATE_CORS_ORIGIN", value_name = "ORIGIN",
          value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Put every host under --branch-domain behind one login: an htpasswd file (bcrypt, SHA1,
    /// APR1, as nginx accepts), watched. One login sets a cookie for the whole domain.
    #[arg(long, env = "BRANCHGATE_BRANCH_AUTH", value_name = "FILE")]
    pub branch_auth: Option<PathBuf>,

    /// Requests carrying `X-Branchgate-Bypass: TOKEN` pass the branch gate without a login (for
    /// CI); at least 16 characters.
    #[arg(long, env = "BRANCHGATE_BRANCH_AUTH_BYPASS_TOKEN", value_name = "TOKEN",
          hide_env_values = true, value_parser = parse_token)]
    pub branch_auth_bypass_token: Option<String>,

    /// Read the bypass token from this file (first line) instead.
    #[arg(
        long,
        env = "BRANCHGATE_BRANCH_AUTH_BYPASS_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "branch_auth_bypass_token"
    )]
    pub branch_auth_bypass_token_file: Option<PathBuf>,

    /// How long a branch gate login lasts (at most 7d).
    #[arg(long, env = "BRANCHGATE_BRANCH_AUTH_TTL", value_name = "DURATION", default_value = "7d",
          value_parser = parse_timeout)]
    pub branch_auth_ttl: Duration,

    /// Only these client addresses may reach hosts under --branch-domain (CIDR list, e.g.
    /// `10.0.0.0/8,192.168.1.7`); others get 403.
    #[arg(long, env = "BRANCHGATE_BRANCH_ALLOW", value_name = "CIDRS",
          value_parser = clap::value_parser!(crate::guard::AllowList))]
    pub branch_allow: Option<crate::guard::AllowList>,

    /// Send `X-Robots-Tag: noindex` on every response from hosts under --branch-domain.
    #[arg(long, env = "BRANCHGATE_BRANCH_NOINDEX", value_name = "BOOL", num_args = 0..=1,
          default_value_t = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub branch_noindex: bool,

    /// nginx-proxy's htpasswd directory: a file named `<host>` protects that host, and
    /// `<host>_<sha1 of VIRTUAL_PATH>` one path of it. Watched.
    #[arg(long, env = "BRANCHGATE_HTPASSWD", value_name = "DIR")]
    pub htpasswd: Option<PathBuf>,

    /// Worker threads, each with its own runtime and SO_REUSEPORT listener (0 = one per CPU).
    #[arg(long, env = "BRANCHGATE_WORKERS", value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=256))]
    pub workers: u16,

    /// Operator log format.
    #[arg(
        long,
        env = "BRANCHGATE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Operator log filter (tracing env-filter syntax, e.g. `info` or `branchgate=debug`).
    #[arg(
        long,
        env = "BRANCHGATE_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Access log on stdout.
    #[arg(
        long,
        env = "BRANCHGATE_ACCESS_LOG",
        value_enum,
        default_value = "common"
    )]
    pub access_log: AccessLogFormat,

    /// Also start a built-in demo backend and route `localhost`, `*.localhost` and `127.0.0.1` to it.
    #[arg(long, env = "BRANCHGATE_DEMO", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
}

impl Config {
    /// Parses flags (and environment). On error, [`ArgsError`] carries
    /// either the help text to print or a one-line message naming the bad
    /// flag; `main` prints it and exits.
    pub fn from_args() -> Result<Self, ArgsError> {
        Self::try_parse().map_err(|e| {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                return ArgsError::Display(e);
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            ArgsError::Invalid(first.trim_start_matches("error: ").to_owned())
        })
    }

    /// The Docker engine to watch, unless `--no-docker`.
    pub fn docker_url(&self) -> Option<String> {
        if self.no_docker {
            return None;
        }
        Some(self.docker.clone().unwrap_or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
        }))
    }

    /// The HTTP listeners' addresses: `--http`, else the default.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        match (self.http.is_empty(), self.demo) {
            (false, _) => self.http.clone(),
            (true, false) => vec![SocketAddr::from(([0, 0, 0, 0], 80))],
            (true, true) => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
        }
    }

    /// The HTTPS listeners' addresses: `--https` (none for `off`), else the default.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        if self.https.contains(&Listen::Off) {
            return Vec::new();
        }
        match (self.https.is_empty(), self.demo) {
            (false, _) => self
                .https
                .iter()
                .filter_map(|l| match l {
                    Listen::Addr(a) => Some(*a),
                    Listen::Off => None,
                })
                .collect(),
            (true, false) => vec![SocketAddr::from(([0, 0, 0, 0], 443))],
            (true, true) => vec![SocketAddr::from(([127, 0, 0, 1], 8443))],
        }
    }

    /// Whether ACME runs: `--acme`, else on unless `--demo`, and only with an HTTPS listener.
    pub fn acme_enabled(&self) -> bool {
        self.acme.unwrap_or(!self.demo) && !self.https_addrs().is_empty()
    }

    /// The ACME directory URL.
    pub fn acme_directory_url(&self) -> &str {
        match (&self.acme_directory, self.acme_staging) {
            (Some(url), _) => url,
            (None, true) => crate::acme::LETS_ENCRYPT_STAGING,
            (None, false) => crate::acme::LETS_ENCRYPT,
        }
    }

    /// The challenges to try, in order, for names that are not wildcards
    /// (wildcards take DNS-01 only): `--acme-challenge`, else TLS-ALPN-01
    /// then HTTP-01 — two kinds, so a failing name stays under Let's
    /// Encrypt's 5 failed validations per hour at the default retry.
    pub fn acme_challenges(&self) -> Vec<crate::acme::Kind> {
        use crate::acme::Kind;
        match self.acme_challenge.is_empty() {
            false => self.acme_challenge.clone(),
            true => vec![Kind::TlsAlpn01, Kind::Http01],
        }
    }

    /// Whether DNS-01 may be used for branch-domain wildcards: `--acme-dns`
    /// is set and `--acme-challenge`, if given, lists `dns-01`.
    pub fn acme_wildcards(&self) -> bool {
        self.acme_dns.is_some()
            && (self.acme_challenge.is_empty()
                || self.acme_challenge.contains(&crate::acme::Kind::Dns01))
    }

    /// Number of worker runtimes to start.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => usize::from(n),
        }
    }
}

/// A listener flag's value: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Listen here.
    Addr(SocketAddr),
    /// No listener of this kind.
    Off,
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    s.trim()
        .parse()
        .map(Listen::Addr)
        .map_err(|_| format!("{s:?} is not an address such as 0.0.0.0:443 or [::]:443, nor off"))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

fn parse_https_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not an https:// URL")),
    }
}

fn parse_email(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && domain.contains('.') && !s.contains([' ', ',', '<', '>']) =>
        {
            Ok(s.to_owned())
        }
        _ => Err(format!("{s:?} is not an e-mail address")),
    }
}

fn parse_redirect(s: &str) -> Result<u16, String> {
    match s.trim().parse() {
        Ok(code @ (301 | 302 | 303 | 307 | 308)) => Ok(code),
        _ => Err(format!(
            "{s:?}: a redirect status is 301, 302, 303, 307 or 308"
        )),
    }
}

/// Why the command line gave no configuration.
#[derive(Debug)]
pub enum ArgsError {
    /// `--help` or `--version`: print it, exit successfully.
    Display(clap::Error),
    /// A bad flag: the one-line message naming it.
    Invalid(String),
}

/// The longest duration a flag takes: anything longer is a typo, and
/// deadlines far in the future overflow the clock.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a timeout: a duration above zero (a zero timeout would close
/// everything at once).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: a timeout must be above zero")),
        d => Ok(d),
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds, up to 7 days.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 5s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m, h or d)"
            ));
        }
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("{s:?} is out of range (at most 7 days)")),
    }
}

fn parse_branch_domain(s: &str) -> Result<String, String> {
    let mut buf = [0; crate::routes::MAX_HOST_LEN];
    match crate::routes::normalize_host(s, &mut buf) {
        Some(h) if h.contains('.') && !h.starts_with('[') => Ok(h.to_owned()),
        _ => Err("expected a domain name such as foo.bar".into()),
    }
}

fn parse_token(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.len() < 16 {
        return Err("must be at least 16 characters".into());
    }
    if http::HeaderValue::from_str(s).is_err() {
        return Err("must be printable ASCII (it is sent as a header value)".into());
    }
    Ok(s.to_owned())
}

fn parse_host_name(s: &str) -> Result<String, String> {
    let mut buf = [0; crate::routes::MAX_HOST_LEN];
    match crate::routes::normalize_host(s, &mut buf) {
        Some(h) if !h.starts_with('[') && !h.contains(':') => Ok(h.to_owned()),
        _ => Err("expected a host name such as admin.foo.bar".into()),
    }
}

fn parse_origin(s: &str) -> Result<String, String> {
    let lower = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or("an origin is http:// or https:// and a host, e.g. https://app.example.com")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err("an origin is a scheme and a host[:port], with no path".into());
    }
    Ok(lower)
}

fn parse_api_prefix(s: &str) -> Result<String, String> {
    crate::routes::spec::check_path(s)?;
    let p = s.trim_end_matches('/');
    if p.is_empty() {
        return Err("the API prefix cannot be `/` (every path would be API)".into());
    }
    Ok(p.to_owned())
}

/// Checks a Docker engine address (`--docker`, `DOCKER_HOST`).
pub fn parse_docker_url(s: &str) -> Result<String, String> {
    const SCHEMES: [&str; 4] = ["unix://", "tcp://", "http://", "https://"];
    match SCHEMES.iter().find(|p| s.starts_with(**p)) {
        Some(p) if s.len() > p.len() => Ok(s.to_owned()),
        Some(_) => Err("the address after the scheme is missing".into()),
        None => Err("expected unix://PATH, tcp://HOST:PORT, http:// or https://".into()),
    }
}

fn parse_host(s: &str) -> Result<String, String> {
    let mut buf = [0; MAX_HOST_LEN];
    normalize_host(s, &mut buf)
        .map(str::to_owned)
        .ok_or_else(|| format!("{s:?} is not a host name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("169h").is_err());
        assert!(parse_duration("1000000h").is_err());
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_timeout("1ms").unwrap(), Duration::from_millis(1));
    }

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from(["bg", "--http", "127.0.0.1:0", "--trust-downstream-proxy"])
            .unwrap();
        assert!(c.trust_downstream_proxy);
        assert_eq!(c.grace_period, Duration::from_secs(8));
        assert!(c.smart_accept);
        let c = Config::try_parse_from(["bg", "--smart-accept", "false"]).unwrap();
        assert!(!c.smart_accept);
        let e = Config::try_parse_from(["bg", "--smart-accept", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--smart-accept"), "{e}");
        let c = Config::try_parse_from(["bg"]).unwrap();
        assert!(c.defer_accept);
        let c = Config::try_parse_from(["bg", "--defer-accept=false"]).unwrap();
        assert!(!c.defer_accept);
        let e = Config::try_parse_from(["bg", "--defer-accept", "later"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--defer-accept"), "{e}");
        let e = Config::try_parse_from(["bg", "--http", "nope"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http"), "{e}");
        let e = Config::try_parse_from(["bg", "--connect-timeout", "5x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--connect-timeout"), "{e}");

        let c = Config::try_parse_from(["bg", "--docker", "tcp://10.0.0.1:2376"]).unwrap();
        assert_eq!(c.docker_url().as_deref(), Some("tcp://10.0.0.1:2376"));
        let c = Config::try_parse_from(["bg", "--branch-domain", "Foo.Bar."]).unwrap();
        assert_eq!(c.branch_domain.as_deref(), Some("foo.bar"));
        assert_eq!(c.api_prefixes, ["/api"]);
        let c = Config::try_parse_from(["bg", "--api-prefix", "/api/", "--api-prefix", "/graphql"])
            .unwrap();
        assert_eq!(c.api_prefixes, ["/api", "/graphql"]);
        for bad in [
            ["--api-prefix", "/"],
            ["--api-prefix", "api"],
            ["--branch-domain", "localhost"],
        ] {
            let e = Config::try_parse_from(["bg", bad[0], bad[1]])
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad[0]), "{e}");
        }
        let c = Config::try_parse_from(["bg", "--no-docker"]).unwrap();
        assert_eq!(c.docker_url(), None);
        let e = Config::try_parse_from(["bg", "--docker", "/var/run/docker.sock"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--docker") && e.contains("unix://"), "{e}");
    }
}
