//! The request-path check the route phase makes before the lookup: no dot segment, however it is
//! spelled. An upstream that decodes `%2F`, treats `\` as `/` (IIS, some
//! Java and Node servers) or cuts `;` path parameters (Tomcat, Jetty) would
//! otherwise resolve `/api/..%2fadmin` or `/api/..;/admin` outside the
//! prefix that was routed.

/// True when a path segment is `.` or `..` once `%2e`, `%2f` and `%5c` are
/// decoded, both `/` and `\` separate segments, and a `;` parameter is cut
/// from each segment.
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Most paths hold no `.` at all, and no `%` to decode one from.
    if !bytes.iter().any(|&b| b == b'.' || b == b'%') {
        return false;
    }
    // Dots seen in the current segment before any other byte; `None` once the
    // segment holds anything else (or after its `;`, which ends what counts).
    let mut dots = Some(0u8);
    let mut in_param = false;
    let mut i = 0;
    while i < bytes.len() {
        let (b, len) = decoded(bytes, i);
        i += len;
        match b {
            b'/' | b'\\' => {
                if matches!(dots, Some(1 | 2)) {
                    return true;
                }
                dots = Some(0);
                in_param = false;
            }
            _ if in_param => {}
            b';' => in_param = true,
            b'.' => dots = dots.and_then(|d| d.checked_add(1)).filter(|&d| d <= 2),
            _ => dots = None,
        }
    }
    matches!(dots, Some(1 | 2))
}

/// The byte at `i` with `%2e`, `%2f` and `%5c` decoded (any case), and how
/// many input bytes it took. Other escapes stay as they are.
fn decoded(bytes: &[u8], i: usize) -> (u8, usize) {
    if bytes[i] == b'%'
        && let Some(&[h, l]) = bytes.get(i + 1..i + 3)
    {
        let decoded = match (h, l.to_ascii_lowercase()) {
            (b'2', b'e') => Some(b'.'),
            (b'2', b'f') => Some(b'/'),
            (b'5', b'c') => Some(b'\\'),
            _ => None,
        };
        if let Some(b) = decoded {
            return (b, 3);
        }
    }
    (bytes[i], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_in_every_spelling() {
        for p in [
            "/a/../b",
            "/..",
            "/a/.",
            "/./a",
            "/%2e%2E/x",
            "/a/.%2e/b",
            "/api/..%2fadmin",
            "/api/..%2Fadmin",
            "/api%2F..",
            "/api/%2F../admin",
            "/api/..;/admin",
            "/api/.;x/admin",
            "/api/..;jsessionid=1",
            "/api/%5c..%5cadmin",
            "/api/%5C..%5Cadmin",
            "/api\\..\\admin",
            "/api/%2e%2e%2fadmin",
            "/api/;x/../admin",
        ] {
            assert!(has_dot_segment(p), "{p}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/",
            "/a.b/c",
            "/..a/b",
            "/a/b.",
            "/%2f",
            "/.well-known/x",
            "/a/...",
            "/a/.../b",
            "/a;.b/c",
            "/api/x;..",
            "/%252e%252e/x",
            "/a%2",
            "/a%",
            "/%2e%2e%2e",
        ] {
            assert!(!has_dot_segment(p), "{p}");
        }
    }
}
