//! The policy phase: what a route demands before its request is forwarded.
//! Today that is CORS (a preflight answered here, a grant added to the
//! response); HTTPS redirects, ACME challenges, auth, allow lists and limits
//! go here and nowhere else. Synchronous, run under the table guard; reads
//! only the route's [`Policy`] and the request.

use http::header::{ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request};

use super::cors::{self, CorsPolicy};
use super::respond::{Answer, Preflight};
use crate::routes::Policy;

/// What the policy phase adds to the upstream's response.
#[derive(Debug, Default)]
pub struct Decoration {
    /// CORS route with an `Origin`: the origin, and whether it is allowed.
    cors: Option<(HeaderValue, bool)>,
}

impl Decoration {
    /// Edits the upstream's response headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some((origin, allowed)) = &self.cors {
            cors::decorate(headers, Some(origin), *allowed);
        }
    }
}

/// Applies `policy` to `req`: an answer when the route answers it itself,
/// else what to add to the forwarded response. `origins` are the origins
/// CORS routes allow.
pub fn policy<'a, B>(
    policy: &Policy,
    req: &Request<B>,
    origins: &CorsPolicy,
) -> Result<Decoration, Answer<'a>> {
    let mut out = Decoration::default();
    if policy.cors
        && let Some(origin) = req.headers().get(ORIGIN)
    {
        let allowed = origin.to_str().is_ok_and(|o| origins.allows(o));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::respond::respond;
    use http::StatusCode;

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
        let Err(answer) = policy(&cors(), &preflight("https://fe.foo.bar"), &origins()) else {
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
        let Err(answer) = policy(&cors(), &preflight("https://evil.example"), &origins()) else {
            panic!("a preflight is answered here")
        };
        let reply = respond(answer, true);
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(!reply.headers.contains_key("access-control-allow-origin"));
    }

    #[test]
    fn other_requests_pass_with_a_decoration() {
        // Not a CORS route: nothing to do, even for a preflight.
        let d = policy(
            &Policy::default(),
            &preflight("https://fe.foo.bar"),
            &origins(),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        d.apply(&mut h);
        assert!(h.is_empty());
        // A CORS route, a simple request: the grant goes on the response.
        let req = Request::get("/")
            .header("origin", "https://fe.foo.bar")
            .body(())
            .unwrap();
        let d = policy(&cors(), &req, &origins()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        d.apply(&mut h);
        assert_eq!(h["access-control-allow-origin"], "https://fe.foo.bar");
        // An OPTIONS without Access-Control-Request-Method is no preflight.
        let req = Request::options("/")
            .header("origin", "https://x.example")
            .body(())
            .unwrap();
        let d = policy(&cors(), &req, &origins()).unwrap();
        let mut h = HeaderMap::new();
        d.apply(&mut h);
        assert!(!h.contains_key("access-control-allow-origin"));
        assert_eq!(h["vary"], "Origin");
    }
}
