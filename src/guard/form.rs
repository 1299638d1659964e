//! Reading what a login form and a browser send: one field of an
//! `application/x-www-form-urlencoded` body, one cookie by name. Shared by
//! the admin login and the branch gate.

use http::header::COOKIE;

/// The largest login form read.
const MAX_FORM: usize = 4096;
/// How long a client may take to send it.
const FORM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A login form's body, read whole: `None` when it is larger than
/// [`MAX_FORM`], takes longer than [`FORM_TIMEOUT`], or breaks off.
pub async fn read<B>(body: B) -> Option<bytes::Bytes>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let collected = tokio::time::timeout(FORM_TIMEOUT, limited.collect()).await;
    Some(collected.ok()?.ok()?.to_bytes())
}

/// One field of an `application/x-www-form-urlencoded` body or query.
pub fn value(form: &[u8], name: &str) -> Option<String> {
    form.split(|b| *b == b'&')
        .filter_map(|pair| {
            let i = pair.iter().position(|b| *b == b'=').unwrap_or(pair.len());
            (&pair[..i] == name.as_bytes())
                .then(|| percent_decode(pair.get(i + 1..).unwrap_or(b"")))
        })
        .next()
}

/// The value of the cookie `name`, if the request carries it (in any of
/// its `Cookie` headers: HTTP/2 may split them).
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Whether `next` is a path on this host (not `//other.host/`, not a URL):
/// the only place a login may send a browser back to.
pub fn local_path(next: &str) -> bool {
    // Browsers drop tabs and newlines in a URL and read `\` as `/`, so
    // `/\t/evil.example` would become `//evil.example`: none of them at all.
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\')
}

/// `+` as space and `%XX` escapes; invalid UTF-8 replaced.
pub fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` with everything but unreserved characters and `/` percent-encoded:
/// safe inside a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cookies_and_paths() {
        let form = b"user=ann+b&password=p%26w%3D1&next=%2Fx%3Fa%3D1";
        assert_eq!(value(form, "user").as_deref(), Some("ann b"));
        assert_eq!(value(form, "password").as_deref(), Some("p&w=1"));
        assert_eq!(value(form, "next").as_deref(), Some("/x?a=1"));
        assert_eq!(value(form, "missing"), None);
        let mut h = http::HeaderMap::new();
        h.append(COOKIE, "a=1; gate=xyz".parse().unwrap());
        h.append(COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "gate"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(local_path("/a?b") && !local_path("//evil.example/") && !local_path("https://x"));
        assert!(!local_path("/\\evil.example"));
        for sneaky in ["/\t/evil.example", "/\n/evil.example", "/ /x", "/a\\b"] {
            assert!(!local_path(sneaky), "{sneaky:?}");
        }
        assert_eq!(
            percent_decode(percent_encode("/p?q=1&r=ü").as_bytes()),
            "/p?q=1&r=ü"
        );
    }
}
