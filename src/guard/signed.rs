//! Signed, expiring values for cookies: `PAYLOAD.EXPIRY.MAC`, the MAC an
//! HMAC-SHA256 of `PAYLOAD.EXPIRY`. Stateless (no server-side session
//! store), verified in constant time (ring's `hmac::verify`). The admin
//! session and the branch gate's login both use it, under different keys.

use ring::hmac;

/// A value signed under `key` that is valid until `expiry` (unix seconds).
/// `payload` must not contain control characters or `;` (it goes into a
/// cookie); `.` is fine, the last two fields are found from the right.
pub fn sign(key: &hmac::Key, payload: &str, expiry: u64) -> String {
    let signed = format!("{payload}.{expiry}");
    let tag = hmac::sign(key, signed.as_bytes());
    format!("{signed}.{}", hex(tag.as_ref()))
}

/// The payload of `value` if `key` signed it and it has not expired at
/// `now` (unix seconds).
pub fn verify<'v>(key: &hmac::Key, value: &'v str, now: u64) -> Option<&'v str> {
    let (signed, tag) = value.rsplit_once('.')?;
    let (payload, expiry) = signed.rsplit_once('.')?;
    let until = expiry.parse::<u64>().ok()?;
    let tag = unhex(tag)?;
    (now < until && hmac::verify(key, signed.as_bytes(), &tag).is_ok()).then_some(payload)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_verify_until_expiry_and_resist_edits() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let v = sign(&key, "ann.smith", 1000);
        assert_eq!(verify(&key, &v, 999), Some("ann.smith"));
        assert_eq!(verify(&key, &v, 1000), None, "expired");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        assert_eq!(verify(&other, &v, 1), None, "another key");
        let (_, tag) = v.rsplit_once('.').unwrap();
        assert_eq!(verify(&key, &format!("ann.smith.5000.{tag}"), 1), None);
        assert_eq!(verify(&key, &format!("bob.1000.{tag}"), 1), None);
        for junk in ["", "x", "a.b", "a.1.zz", "a.1.0"] {
            assert_eq!(verify(&key, junk, 0), None, "{junk:?}");
        }
    }
}
