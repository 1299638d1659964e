//! TSIG (RFC 8945) for the RFC 2136 client ([`super::rfc2136`]): the key
//! from `--acme-dns-tsig` and its file (plain base64, BIND or Knot), the
//! signature on each request, and the check of the server's signature on
//! its answer. The TSIG record itself is written and read in [`super::wire`].

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::hmac;

use super::wire::{CLASS_ANY, TYPE_TSIG, TsigRecord, put_name, put_u16, put_u32, put_u48};

/// Clock skew allowed between us and the server (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

/// A TSIG key: name, HMAC algorithm and shared secret.
#[derive(Clone)]
pub struct TsigKey {
    /// Lowercase, without the trailing dot.
    name: String,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm.name())
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsigAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl TsigAlgorithm {
    fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_suffix('.').unwrap_or(name);
        [Self::Sha256, Self::Sha384, Self::Sha512, Self::Sha1]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "hmac-sha1",
            Self::Sha256 => "hmac-sha256",
            Self::Sha384 => "hmac-sha384",
            Self::Sha512 => "hmac-sha512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha384 => hmac::HMAC_SHA384,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

impl TsigKey {
    /// From `--acme-dns-tsig NAME:ALGORITHM:SECRET-FILE`. ALGORITHM is
    /// hmac-sha256, hmac-sha384, hmac-sha512 or (legacy) hmac-sha1. The file
    /// holds the base64 secret alone, or BIND's `key "NAME" { … secret "…"; };`,
    /// or Knot's `key:` YAML (as `keymgr -t` prints). Errors do not repeat
    /// the flag: the caller names it.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(algorithm), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("expected NAME:ALGORITHM:SECRET-FILE, not {spec:?}"));
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.is_empty() {
            return Err("the key name is empty".into());
        }
        put_name(&mut Vec::new(), &name).map_err(|why| format!("key name {name:?}: {why}"))?;
        let algorithm = TsigAlgorithm::from_name(algorithm).ok_or_else(|| {
            format!(
                "unknown algorithm {algorithm:?} \
                 (hmac-sha256, hmac-sha384, hmac-sha512, or legacy hmac-sha1)"
            )
        })?;
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let secret =
            secret_from_file(&text, &name, algorithm).map_err(|why| format!("{file} {why}"))?;
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// The TSIG variables of RFC 8945 §4.3.3, names in canonical form.
    fn variables(&self, time: u64, fudge: u16, error: u16, other: &[u8]) -> Vec<u8> {
        let mut vars = Vec::with_capacity(64);
        // Both names were checked to encode when the key was parsed.
        let _ = put_name(&mut vars, &self.name);
        put_u16(&mut vars, CLASS_ANY);
        put_u32(&mut vars, 0);
        let _ = put_name(&mut vars, self.algorithm.name());
        put_u48(&mut vars, time);
        put_u16(&mut vars, fudge);
        put_u16(&mut vars, error);
        put_u16(&mut vars, other.len() as u16);
        vars.extend_from_slice(other);
        vars
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(self.algorithm.hmac(), &self.secret)
    }

    /// Signs `msg` (RFC 8945 §4.3): appends the TSIG RR and counts it in
    /// ARCOUNT. Returns the MAC, which the answer's signature covers.
    pub(super) fn sign(&self, msg: &mut Vec<u8>, now: u64) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.hmac_key());
        ctx.update(msg);
        ctx.update(&self.variables(now, FUDGE, 0, &[]));
        let mac = ctx.sign().as_ref().to_vec();

        let original_id = u16::from_be_bytes([msg[0], msg[1]]);
        let _ = put_name(msg, &self.name);
        put_u16(msg, TYPE_TSIG);
        put_u16(msg, CLASS_ANY);
        put_u32(msg, 0);
        let mut rdata = Vec::with_capacity(32 + mac.len());
        let _ = put_name(&mut rdata, self.algorithm.name());
        put_u48(&mut rdata, now);
        put_u16(&mut rdata, FUDGE);
        put_u16(&mut rdata, mac.len() as u16);
        rdata.extend_from_slice(&mac);
        put_u16(&mut rdata, original_id);
        put_u16(&mut rdata, 0); // error
        put_u16(&mut rdata, 0); // other len
        put_u16(msg, rdata.len() as u16);
        msg.extend_from_slice(&rdata);
        let arcount = u16::from_be_bytes([msg[10], msg[11]]) + 1;
        msg[10..12].copy_from_slice(&arcount.to_be_bytes());
        mac
    }

    /// Checks an answer's TSIG (RFC 8945 §5.3.1 and §4.3.1): key, MAC over
    /// the request MAC, the answer without its TSIG RR, and the variables;
    /// then the time.
    pub(super) fn verify(
        &self,
        answer: &[u8],
        tsig: &TsigRecord,
        request_mac: &[u8],
        now: u64,
    ) -> Result<(), &'static str> {
        if tsig.key != self.name
            || TsigAlgorithm::from_name(&tsig.algorithm) != Some(self.algorithm)
        {
            return Err("it is signed with another key");
        }
        let mut signed = Vec::with_capacity(answer.len() + request_mac.len() + 64);
        put_u16(&mut signed, request_mac.len() as u16);
        signed.extend_from_slice(request_mac);
        let body = signed.len();
        signed.extend_from_slice(&answer[..tsig.start]);
        signed[body..body + 2].copy_from_slice(&tsig.original_id.to_be_bytes());
        let arcount = u16::from_be_bytes([signed[body + 10], signed[body + 11]]).saturating_sub(1);
        signed[body + 10..body + 12].copy_from_slice(&arcount.to_be_bytes());
        signed.extend_from_slice(&self.variables(tsig.time, tsig.fudge, tsig.error, &tsig.other));
        hmac::verify(&self.hmac_key(), &signed, &tsig.mac).map_err(|_| "the MAC does not match")?;
        if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
            return Err("it was signed outside the allowed clock skew");
        }
        Ok(())
    }
}

/// The secret for key `name` in a key file: the file is the base64 secret
/// alone, or BIND `key` statements, or Knot `key:` YAML.
fn secret_from_file(text: &str, name: &str, algorithm: TsigAlgorithm) -> Result<Vec<u8>, String> {
    let compact: String = text.split_whitespace().collect();
    if let Some(secret) = decode_base64(&compact) {
        return Ok(secret);
    }
    let entries = key_entries(text);
    let norm = |n: &str| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
    let entry = entries
        .iter()
        .find(|e| e.name.as_deref().map(norm).as_deref() == Some(name))
        .or(match entries.as_slice() {
            [only] if only.name.is_none() => Some(only),
            _ => None,
        });
    let Some(entry) = entry else {
        if entries.is_empty() {
            return Err("holds no base64 secret".into());
        }
        let names: Vec<&str> = entries.iter().filter_map(|e| e.name.as_deref()).collect();
        return Err(format!(
            "holds no secret for key {name:?} (it has {})",
            names.join(", ")
        ));
    };
    if let Some(alg) = &entry.algorithm
        && TsigAlgorithm::from_name(alg) != Some(algorithm)
    {
        return Err(format!(
            "gives key {name:?} algorithm {alg}, not {}",
            algorithm.name()
        ));
    }
    decode_base64(&entry.secret).ok_or_else(|| format!("holds no base64 secret for key {name:?}"))
}

/// One key from a BIND or Knot key file.
#[derive(Debug, Default)]
struct KeyEntry {
    name: Option<String>,
    algorithm: Option<String>,
    secret: String,
}

/// The keys with a secret in BIND (`key "n" { algorithm a; secret "s"; };`)
/// or Knot YAML (`key:` / `- id: n` / `algorithm: a` / `secret: s`) text.
fn key_entries(text: &str) -> Vec<KeyEntry> {
    let mut entries = Vec::new();
    let mut current = KeyEntry::default();
    let unquote = |s: &str| s.trim().trim_matches(['"', '\'']).to_owned();
    let statements = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim_start().starts_with("//"))
        .flat_map(|l| l.split([';', '{', '}']));
    for statement in statements {
        let s = statement.trim();
        let s = s.strip_prefix('-').unwrap_or(s).trim_start();
        let (word, rest) = match s.find(|c: char| c == ':' || c.is_whitespace()) {
            Some(i) => (&s[..i], s[i + 1..].trim()),
            None => (s, ""),
        };
        match word.to_ascii_lowercase().as_str() {
            "key" | "id" if !rest.is_empty() => {
                if !current.secret.is_empty() {
                    entries.push(std::mem::take(&mut current));
                }
                current = KeyEntry {
                    name: Some(unquote(rest)),
                    ..KeyEntry::default()
                };
            }
            "algorithm" => current.algorithm = Some(unquote(rest)),
            "secret" => current.secret = unquote(rest),
            _ => {}
        }
    }
    if !current.secret.is_empty() {
        entries.push(current);
    }
    entries
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok().filter(|secret| !secret.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::dns::tests::{SECRET, write};
    use crate::acme::dns::wire::{TYPE_SOA, parse_reply, query_message};

    fn test_key(secret: &[u8]) -> TsigKey {
        TsigKey {
            name: "acme.test".into(),
            algorithm: TsigAlgorithm::Sha256,
            secret: secret.to_vec(),
        }
    }

    /// The TSIG variables for key `acme.test`, hmac-sha256, built by hand.
    fn hand_variables(time: u64) -> Vec<u8> {
        let mut v = b"\x04acme\x04test\x00\x00\xff\x00\x00\x00\x00\x0bhmac-sha256\x00".to_vec();
        v.extend_from_slice(&time.to_be_bytes()[2..]);
        v.extend_from_slice(&[1, 44, 0, 0, 0, 0]); // fudge 300, no error, no other data
        v
    }

    #[test]
    fn requests_are_signed_and_signed_answers_verify() {
        let key = test_key(b"0123456789abcdef");
        let now = 1_700_000_000;
        let unsigned = query_message(7, "foo.bar", TYPE_SOA).unwrap();
        let mut request = unsigned.clone();
        let mac = key.sign(&mut request, now);

        // The MAC covers the unsigned message and the TSIG variables.
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef");
        let digest = [&unsigned[..], &hand_variables(now)].concat();
        assert_eq!(mac, hmac::sign(&hmac_key, &digest).as_ref());
        // …and travels in a TSIG RR counted in ARCOUNT.
        assert_eq!(request[10..12], [0, 1]);
        let tsig = parse_reply(&request).unwrap().tsig.unwrap();
        assert_eq!(
            (tsig.key.as_str(), tsig.algorithm.as_str()),
            ("acme.test", "hmac-sha256")
        );
        assert_eq!(
            (tsig.time, tsig.fudge, tsig.original_id, tsig.error),
            (now, 300, 7, 0)
        );
        assert_eq!((tsig.start, &tsig.mac), (unsigned.len(), &mac));

        // An answer signed as a server signs it (RFC 8945 §4.3.1).
        let mut answer = unsigned.clone();
        answer[2] |= 0x80;
        let prefixed = [
            &(mac.len() as u16).to_be_bytes()[..],
            &mac,
            &answer,
            &hand_variables(now),
        ];
        let answer_mac = hmac::sign(&hmac_key, &prefixed.concat());
        let mut signed = answer.clone();
        signed[11] = 1;
        signed.extend_from_slice(b"\x04acme\x04test\x00\x00\xfa\x00\xff\x00\x00\x00\x00");
        let mut rdata = b"\x0bhmac-sha256\x00".to_vec();
        rdata.extend_from_slice(&now.to_be_bytes()[2..]);
        rdata.extend_from_slice(&[1, 44, 0, 32]);
        rdata.extend_from_slice(answer_mac.as_ref());
        rdata.extend_from_slice(&[0, 7, 0, 0, 0, 0]);
        signed.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        signed.extend_from_slice(&rdata);

        let tsig = parse_reply(&signed).unwrap().tsig.unwrap();
        assert_eq!(key.verify(&signed, &tsig, &mac, now + 10), Ok(()));
        assert_eq!(
            key.verify(&signed, &tsig, &mac, now + 301),
            Err("it was signed outside the allowed clock skew")
        );
        assert_eq!(
            test_key(b"other").verify(&signed, &tsig, &mac, now),
            Err("the MAC does not match")
        );
        let mut tampered = signed.clone();
        tampered[13] ^= 0x20; // "foo" → "Foo": still parses, no longer matches
        let tsig = parse_reply(&tampered).unwrap().tsig.unwrap();
        assert_eq!(
            key.verify(&tampered, &tsig, &mac, now),
            Err("the MAC does not match")
        );
    }

    #[test]
    fn tsig_keys_parse_from_plain_bind_and_knot_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let plain = write(d, "plain", &format!("  {SECRET}\n"));
        let key = TsigKey::parse(&format!("Acme.:hmac-sha256:{plain}")).unwrap();
        assert_eq!(
            (key.name.as_str(), key.algorithm),
            ("acme", TsigAlgorithm::Sha256)
        );
        assert_eq!(key.secret, b"secret-secret-secret");
        assert!(format!("{key:?}").contains("<redacted>"));

        let bind = write(
            d,
            "bind",
            &format!("key \"acme\" {{\n\talgorithm hmac-sha512;\n\tsecret \"{SECRET}\";\n}};\n"),
        );
        let key = TsigKey::parse(&format!("acme:hmac-sha512:{bind}")).unwrap();
        assert_eq!(key.secret, b"secret-secret-secret");

        let two = write(
            d,
            "two",
            &format!(
                "key \"other\" {{ algorithm hmac-sha256; secret \"b3RoZXI=\"; }};\n\
                 // the one we want\n\
                 key \"acme.\" {{ algorithm hmac-sha1; secret \"{SECRET}\"; }};\n"
            ),
        );
        let key = TsigKey::parse(&format!("acme:hmac-sha1:{two}")).unwrap();
        assert_eq!(key.secret, b"secret-secret-secret");
        let key = TsigKey::parse(&format!("other:hmac-sha256:{two}")).unwrap();
        assert_eq!(key.secret, b"other");

        // As `keymgr -t acme hmac-sha384` prints it.
        let knot = write(
            d,
            "knot",
            &format!(
                "# hmac-sha384:acme:{SECRET}\nkey:\n  - id: acme\n    \
                 algorithm: hmac-sha384\n    secret: {SECRET}\n"
            ),
        );
        let key = TsigKey::parse(&format!("acme:HMAC-SHA384:{knot}")).unwrap();
        assert_eq!(key.algorithm, TsigAlgorithm::Sha384);
        assert_eq!(key.secret, b"secret-secret-secret");
    }

    #[test]
    fn bad_tsig_specs_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = |spec: String| TsigKey::parse(&spec).unwrap_err();
        let good = write(d, "good", SECRET);
        assert!(
            err(format!("acme:md5:{good}"))
                .contains(r#"unknown algorithm "md5" (hmac-sha256, hmac-sha384, hmac-sha512"#)
        );
        assert!(
            err("acme:hmac-sha256:/nonexistent/key".into())
                .contains("cannot read /nonexistent/key: No such file")
        );
        assert!(err("acme-hmac-sha256".into()).contains("NAME:ALGORITHM:SECRET-FILE"));
        assert!(err(format!(":hmac-sha256:{good}")).contains("key name is empty"));
        for text in [
            "",
            "not base64 !!!\n",
            "key \"acme\" { algorithm hmac-sha256; };",
        ] {
            let file = write(d, "bad", text);
            let msg = err(format!("acme:hmac-sha256:{file}"));
            assert!(msg.ends_with("holds no base64 secret"), "{text:?}: {msg}");
        }
        let bind = write(
            d,
            "bind",
            &format!("key \"acme\" {{ algorithm hmac-sha512; secret \"{SECRET}\"; }};"),
        );
        assert!(
            err(format!("acme:hmac-sha256:{bind}"))
                .contains("gives key \"acme\" algorithm hmac-sha512, not hmac-sha256")
        );
        assert!(
            err(format!("other:hmac-sha512:{bind}"))
                .contains("holds no secret for key \"other\" (it has acme)")
        );
        let bad_secret = write(d, "bad-secret", "secret: \"!!\"");
        assert!(err(format!("acme:hmac-sha256:{bad_secret}")).contains("holds no base64 secret"));
    }
}
