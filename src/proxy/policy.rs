//! The policy phase: what a route demands before its request is forwarded:
//! nginx-proxy's HTTP/HTTPS rules (`HTTPS_METHOD`, HSTS) and CORS (a
//! preflight answered here, a grant added to the response); access
//! (allow lists, the branch gate, Basic auth: [`crate::guard`]), body
//! limits and per-route timeouts go here and nowhere else.
//! Synchronous, run under the table guard; reads only the route's
//! [`Policy`], the request and the certificates in force.
//!
//! | `HTTPS_METHOD` | over HTTP, host with a certificate | over HTTPS |
//! |---|---|---|
//! | `redirect` (default) | 301 to `https://` (`--non-get-redirect` for other methods) | served, HSTS |
//! | `noredirect` | served | served, no HSTS |
//! | `nohttp` | 503 | served, HSTS |
//! | `nohttps` | served | 503 |
//!
//! A host without any certificate (not even `default.crt`) is served over
//! HTTP whatever its method, and `/.well-known/acme-challenge/` is never
//! redirected.

use http::header::{ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};

use super::cors::{self, CorsPolicy};
use super::error::ProxyError;
use super::listener::Scheme;
use super::respond::{Answer, Preflight, Redirect};
use crate::guard::{Access, Consumed, Refusal, Target};
use crate::routes::{HttpsMethod, Policy};
use crate::tls::CertStore;

/// The path prefix of ACME HTTP-01 challenges: never redirected.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// What the policy phase reads besides the route and the request.
#[derive(Debug)]
pub struct Context<'a> {
    /// The scheme the request came in over.
    pub scheme: Scheme,
    /// Origins that CORS routes allow.
    pub origins: &'a CorsPolicy,
    /// The HTTPS side; `None` with `--https off`.
    pub https: Option<Https<'a>>,
    /// Redirect status for methods other than GET and HEAD.
    pub non_get_redirect: StatusCode,
    /// Access settings and state.
    pub access: &'a Access,
    /// The socket peer's address.
    pub peer: std::net::IpAddr,
}

/// What the HTTP/HTTPS rules read of the HTTPS side.
#[derive(Clone, Copy, Debug)]
pub struct Https<'a> {
    /// The port redirects go to (named in `Location` unless 443).
    pub port: u16,
    /// The certificates in force, loaded only when a rule needs them.
    pub certs: &'a CertStore,
    /// ACME's certificates, while ACME runs.
    pub acme: Option<&'a crate::acme::Acme>,
}

/// What the policy phase adds to the upstream's response.
#[derive(Debug, Default)]
pub struct Decoration {
    /// CORS route with an `Origin`: the origin, and whether it is allowed.
    cors: Option<(HeaderValue, bool)>,
    /// What the access step consumed, removed before forwarding.
    pub consumed: Consumed,
    /// The route's `max_body`, enforced while a body without a
    /// `Content-Length` is read.
    pub max_body: Option<u64>,
    /// The route's `response_timeout`.
    pub response_timeout: Option<std::time::Duration>,
}

impl Decoration {
    /// Edits the upstream's response headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some((origin, allowed)) = &self.cors {
            cors::decorate(headers, Some(origin), *allowed);
        }
    }
}

/// `X-Robots-Tag: noindex`, on every response from a branch environment.
pub const NOINDEX: HeaderValue = HeaderValue::from_static("noindex");

/// The `Strict-Transport-Security` value every response on `policy`'s route
/// gets over `scheme` (forwarded or branchgate's own): only over TLS, never
/// with `noredirect` or `HSTS=off`. Computed once per request by the handler.
pub fn hsts(policy: &Policy, scheme: Scheme) -> Option<HeaderValue> {
    let method = policy.https_method.unwrap_or(HttpsMethod::Redirect);
    match (scheme, method) {
        (Scheme::Http, _) | (_, HttpsMethod::NoRedirect | HttpsMethod::NoHttps) => None,
        (Scheme::Https, _) => policy.hsts.header(),
    }
}

/// Applies `policy` to `req` (sent to `target`, its host normalised by the
/// route phase): an answer when the route answers it itself, else what to
/// add to the forwarded response.
pub fn policy<'a, B>(
    policy: &Policy,
    req: &Request<B>,
    target: &Target<'_>,
    cx: &Context<'_>,
) -> Result<Decoration, Answer<'a>> {
    scheme_rule(policy, req, target.name, cx)?;
    // Nothing to check unless a flag or the route asks: no call at all.
    let consumed = match cx.access.flags_restrict() || policy.restricts() {
        true => cx
            .access
            .check(policy, req, target, cx.peer)
            .map_err(|r| refused(r, req, cx.origins))?,
        false => Consumed::default(),
    };
    let mut out = Decoration {
        consumed,
        response_timeout: policy.response_timeout,
        ..Decoration::default()
    };
    if let Some(max) = policy.max_body {
        // Known up front: refused before a byte of the body is read.
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ProxyError::BodyTooLarge(max).into());
        }
        out.max_body = Some(max);
    }
    if policy.cors
        && let Some(origin) = req.headers().get(ORIGIN)
    {
        let allowed = origin.to_str().is_ok_and(|o| cx.origins.allows(o));
        if req.method() == Method::OPTIONS
            && let Some(method) = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Err(Answer::Preflight(Box::new(Preflight {
                origin: origin.clone(),
                allowed,
                method: method.clone(),
                headers: req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
            })));
        }
        out.cors = Some((origin.clone(), allowed));
    }
    Ok(out)
}

/// The answer to a refusal of the access step for `req`.
pub fn refused<'a, B>(r: Refusal, req: &Request<B>, origins: &CorsPolicy) -> Answer<'a> {
    match r {
        Refusal::Preflight => preflight(req, origins),
        Refusal::Forbidden(ip) => ProxyError::NotAllowed(ip).into(),
        Refusal::WrongBypass => ProxyError::WrongBypass.into(),
        Refusal::Throttled => ProxyError::Throttled.into(),
        Refusal::Unauthorized(challenge) => Answer::Unauthorized(challenge),
        Refusal::Login(location) => Answer::Login(location),
    }
}

/// A preflight answered here: granted for the origins CORS routes allow
/// (the branch domain, `--cors-origin`), else 403.
fn preflight<'a, B>(req: &Request<B>, origins: &CorsPolicy) -> Answer<'a> {
    let h = req.headers();
    let (Some(origin), Some(method)) = (h.get(ORIGIN), h.get(ACCESS_CONTROL_REQUEST_METHOD)) else {
        return ProxyError::BadHost.into();
    };
    Answer::Preflight(Box::new(Preflight {
        origin: origin.clone(),
        allowed: origin.to_str().is_ok_and(|o| origins.allows(o)),
        method: method.clone(),
        headers: h.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
    }))
}

/// nginx-proxy's `HTTPS_METHOD` with `TRUST_DEFAULT_CERT=true` and
/// `ENABLE_HTTP_ON_MISSING_CERT=true`. Alone, for branchgate's own pages
/// (the dashboard host, the gate's login form): HTTPS first, no route.
pub fn scheme_rule<'a, B>(
    policy: &Policy,
    req: &Request<B>,
    name: &str,
    cx: &Context<'_>,
) -> Result<(), Answer<'a>> {
    let method = policy.https_method.unwrap_or(HttpsMethod::Redirect);
    if cx.scheme == Scheme::Https {
        return match method {
            HttpsMethod::NoHttps => Err(ProxyError::NotOverHttps.into()),
            _ => Ok(()),
        };
    }
    if matches!(method, HttpsMethod::NoHttps | HttpsMethod::NoRedirect)
        || req.uri().path().starts_with(ACME_CHALLENGE)
    {
        return Ok(());
    }
    let Some(Https { port, certs, acme }) = cx.https else {
        return Ok(());
    };
    // No certificate at all for this host: served over HTTP rather than locked out.
    if certs
        .load()
        .select(name, policy.cert_name.as_deref())
        .is_none()
        && acme.is_none_or(|a| a.cert_for(name).is_none())
    {
        return Ok(());
    }
    if method == HttpsMethod::NoHttp {
        return Err(ProxyError::HttpsOnly.into());
    }
    let status = match *req.method() {
        Method::GET | Method::HEAD => StatusCode::MOVED_PERMANENTLY,
        _ => cx.non_get_redirect,
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = match port {
        443 => format!("https://{name}{target}"),
        port => format!("https://{name}:{port}{target}"),
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => Err(Answer::Redirect(Redirect { status, location })),
        // Unreachable: the host and target were valid header values already.
        Err(_) => Err(ProxyError::BadHost.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::respond::respond;

    fn origins() -> CorsPolicy {
        CorsPolicy {
            domain: Some("foo.bar".into()),
            origins: vec![],
        }
    }

    fn cors() -> Policy {
        Policy {
            cors: true,
            ..Policy::default()
        }
    }

    fn run<'a>(p: &Policy, req: &Request<()>) -> Result<Decoration, Answer<'a>> {
        let origins = origins();
        let access = Access::new(None);
        let cx = Context {
            scheme: Scheme::Http,
            origins: &origins,
            https: None,
            non_get_redirect: StatusCode::MOVED_PERMANENTLY,
            access: &access,
            peer: [127, 0, 0, 1].into(),
        };
        policy(p, req, &Target::host("fe.foo.bar"), &cx)
    }

    fn preflight(origin: &str) -> Request<()> {
        Request::options("/api")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-token")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_granted() {
        let Err(answer) = run(&cors(), &preflight("https://fe.foo.bar")) else {
            panic!("a preflight is answered here")
        };
        let reply = respond(answer, false);
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        let h = &reply.headers;
        assert_eq!(h["access-control-allow-origin"], "https://fe.foo.bar");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "PUT");
        assert_eq!(h["access-control-allow-headers"], "x-token");
        assert_eq!(h["vary"], "Origin");
        assert!(reply.body.is_empty());
    }

    #[test]
    fn a_preflight_from_another_origin_is_refused_without_cors_headers() {
        let Err(answer) = run(&cors(), &preflight("https://evil.example")) else {
            panic!("a preflight is answered here")
        };
        let reply = respond(answer, true);
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(!reply.headers.contains_key("access-control-allow-origin"));
    }

    #[test]
    fn other_requests_pass_with_a_decoration() {
        // Not a CORS route: nothing to do, even for a preflight.
        let d = run(&Policy::default(), &preflight("https://fe.foo.bar")).unwrap();
        let mut h = HeaderMap::new();
        d.apply(&mut h);
        assert!(h.is_empty());
        // A CORS route, a simple request: the grant goes on the response.
        let req = Request::get("/")
            .header("origin", "https://fe.foo.bar")
            .body(())
            .unwrap();
        let d = run(&cors(), &req).unwrap();
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        d.apply(&mut h);
        assert_eq!(h["access-control-allow-origin"], "https://fe.foo.bar");
        // An OPTIONS without Access-Control-Request-Method is no preflight.
        let req = Request::options("/")
            .header("origin", "https://x.example")
            .body(())
            .unwrap();
        let d = run(&cors(), &req).unwrap();
        let mut h = HeaderMap::new();
        d.apply(&mut h);
        assert!(!h.contains_key("access-control-allow-origin"));
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn redirects_name_the_port_unless_443() {
        let cert = std::sync::Arc::new(
            crate::demo::certificate(&crate::tls::provider()).expect("a certificate"),
        );
        let certs = CertStore::new(crate::tls::Certs::with_builtin(
            Default::default(),
            None,
            Some(&cert),
        ));
        let origins = origins();
        let access = Access::new(None);
        let req = Request::get("/p?q").body(()).unwrap();
        for (port, host, want) in [
            (443, "app.localhost", "https://app.localhost/p?q"),
            (443, "App.Localhost.:80", "https://app.localhost/p?q"),
            (8443, "app.localhost:8080", "https://app.localhost:8443/p?q"),
        ] {
            let cx = Context {
                scheme: Scheme::Http,
                origins: &origins,
                https: Some(Https {
                    port,
                    certs: &certs,
                    acme: None,
                }),
                non_get_redirect: StatusCode::MOVED_PERMANENTLY,
                access: &access,
                peer: [127, 0, 0, 1].into(),
            };
            // As the route phase hands it over.
            let mut buf = [0; crate::routes::MAX_HOST_LEN];
            let name = crate::routes::normalize_host(host, &mut buf).unwrap();
            let Err(Answer::Redirect(r)) =
                policy(&Policy::default(), &req, &Target::host(name), &cx)
            else {
                panic!("{host:?} is redirected");
            };
            assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
            assert_eq!(r.location, want);
        }
        // Without a certificate for the host (and no default), no redirect.
        let empty = CertStore::default();
        let cx = Context {
            scheme: Scheme::Http,
            origins: &origins,
            https: Some(Https {
                port: 443,
                certs: &empty,
                acme: None,
            }),
            non_get_redirect: StatusCode::MOVED_PERMANENTLY,
            access: &access,
            peer: [127, 0, 0, 1].into(),
        };
        assert!(
            policy(
                &Policy::default(),
                &req,
                &Target::host("app.localhost"),
                &cx
            )
            .is_ok()
        );
    }
}
