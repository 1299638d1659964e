//! CORS for routes marked `branchgate.cors`: a backend reachable at its own
//! host, called from a frontend on another origin. The policy phase answers
//! the preflight itself (rendered by [`super::respond`]) and sets `Access-Control-Allow-Origin` to the request's
//! `Origin` only when that origin is the branch domain, under it, or listed
//! with `--cors-origin`; credentials are allowed, so never `*`. Any other
//! origin gets no CORS headers at all (the upstream's are removed too).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    VARY,
};
use http::{HeaderMap, HeaderValue};

/// Which origins CORS routes allow.
#[derive(Clone, Debug, Default)]
pub struct CorsPolicy {
    /// `--branch-domain`: it and every host under it, over http or https.
    pub domain: Option<String>,
    /// `--cors-origin`: exact origins, lowercased, no trailing `/`.
    pub origins: Vec<String>,
}

impl CorsPolicy {
    /// Whether `origin` (an `Origin` header value) may read responses.
    pub fn allows(&self, origin: &str) -> bool {
        let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&o) {
            return true;
        }
        let Some(domain) = &self.domain else {
            return false;
        };
        let Some(rest) = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
        else {
            return false;
        };
        if rest.contains(['/', '@', '?', '#']) {
            return false;
        }
        let host = rest.split(':').next().unwrap_or("");
        host == domain
            || (host.len() > domain.len() + 1
                && host.ends_with(domain.as_str())
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
    }
}

/// Sets the CORS headers of an upstream response for `origin`.
pub fn decorate(resp: &mut HeaderMap, origin: Option<&HeaderValue>, allowed: bool) {
    for h in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        resp.remove(h);
    }
    resp.append(VARY, HeaderValue::from_static("Origin"));
    if let (Some(origin), true) = (origin, allowed) {
        resp.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        resp.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let p = CorsPolicy {
            domain: Some("foo.bar".into()),
            origins: vec!["https://app.example.com".into()],
        };
        for ok in [
            "https://foo.bar",
            "http://fe.be.foo.bar",
            "https://Fe.Foo.Bar:8443",
            "https://app.example.com/",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "https://evilfoo.bar",
            "https://foo.bar.evil.com",
            "null",
            "https://app.example.com.evil",
            "ftp://fe.foo.bar",
            "https://user@fe.foo.bar",
            "https://fe.foo.bar/x",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        assert!(!CorsPolicy::default().allows("https://foo.bar"));
    }
}
