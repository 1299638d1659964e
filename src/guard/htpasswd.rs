//! Htpasswd user lists, the access layer's credential store: `--branch-auth`
//! and `--htpasswd` files and `branchgate.auth.basic` labels.
//!
//! Reads what nginx's `auth_basic_user_file` reads: `user:hash` lines (an
//! Apache-style third `:comment` field is ignored), first entry per user wins.
//! Hashes: bcrypt (`$2y$`, `$2a$`, `$2b$`), `$apr1$` and `$1$` (MD5-crypt),
//! `{SHA}`, `{SSHA}` and `{PLAIN}`. Each is decoded once at load, so a
//! malformed line is reported then rather than failing every login.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use md5::{Digest as _, Md5};
use ring::digest;

/// Standard base64, `=` padding optional (as nginx's decoder takes it).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// crypt(3)'s base64 alphabet.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// MD5-crypt writes its digest as these byte triples (then byte 11 alone).
const MD5_ORDER: [[usize; 3]; 5] = [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]];
/// The highest bcrypt cost accepted (`htpasswd -C`'s maximum): each step
/// doubles the work, and a cost-31 hash would hold a core for days per login.
const MAX_BCRYPT_COST: u32 = 17;
/// The advice closing an unsupported format's reason.
const USE: &str = "; use bcrypt (`htpasswd -B`)";

/// One user's password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    /// bcrypt (`$2y$`, `$2a$`, `$2b$`), kept as its string for the `bcrypt` crate.
    Bcrypt(String),
    /// `{SHA}`: SHA-1 of the password.
    Sha1([u8; 20]),
    /// `{SSHA}`: SHA-1 of the password then the salt; the digest and the salt.
    Ssha([u8; 20], Vec<u8>),
    /// MD5-crypt: the magic (`$apr1$` or `$1$`), the salt and the digest.
    Md5Crypt(&'static str, Vec<u8>, [u8; 16]),
    /// `{PLAIN}`: held as the password's SHA-256, so it is compared in
    /// constant time like the others and the plaintext is not kept.
    Plain([u8; 32]),
}

/// Names the scheme only: a hash is never printed, not even in a debug dump.
impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bcrypt(_) => "Hash(bcrypt)",
            Self::Sha1(_) => "Hash({SHA})",
            Self::Ssha(..) => "Hash({SSHA})",
            Self::Md5Crypt("$1$", ..) => "Hash($1$)",
            Self::Md5Crypt(..) => "Hash($apr1$)",
            Self::Plain(_) => "Hash({PLAIN})",
        })
    }
}

impl Hash {
    /// Decodes a hash field; the error says why without quoting the hash.
    fn parse(h: &str) -> Result<Self, String> {
        if let Some(p) = h.strip_prefix("{PLAIN}") {
            return Ok(Self::Plain(sha256(p.as_bytes())));
        }
        if let Some(b) = h.strip_prefix("{SHA}") {
            let d = B64.decode(b).ok().and_then(|d| d.try_into().ok());
            return d
                .map(Self::Sha1)
                .ok_or("malformed `{SHA}` (not base64 of 20 bytes)".into());
        }
        if let Some(b) = h.strip_prefix("{SSHA}") {
            let d = B64.decode(b).unwrap_or_default();
            let (digest, salt) = d
                .split_first_chunk::<20>()
                .ok_or("malformed `{SSHA}` (not base64 of 20 bytes and a salt)")?;
            return Ok(Self::Ssha(*digest, salt.to_vec()));
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| h.starts_with(p)) {
            let cost = bcrypt::HashParts::from_str(h)
                .map_err(|e| format!("malformed bcrypt hash ({e})"))?
                .get_cost();
            return match cost {
                4..=MAX_BCRYPT_COST => Ok(Self::Bcrypt(h.to_owned())),
                _ => Err(format!(
                    "bcrypt cost {cost} is not in 4..={MAX_BCRYPT_COST}"
                )),
            };
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = h.strip_prefix(magic) {
                let (salt, digest) =
                    md5_parse(rest).map_err(|e| format!("malformed `{magic}` hash ({e})"))?;
                return Ok(Self::Md5Crypt(magic, salt.as_bytes().to_vec(), digest));
            }
        }
        if h.len() == 13 && h.bytes().all(|b| ITOA64.contains(&b)) {
            return Err(format!(
                "DES crypt is not supported because it is weak{USE}"
            ));
        }
        Err(format!("unknown hash format {}{USE}", shown(h)))
    }

    /// Whether `pw` hashes to this.
    fn verify(&self, pw: &[u8]) -> bool {
        match self {
            Self::Bcrypt(h) => bcrypt::verify(pw, h).unwrap_or(false),
            Self::Sha1(d) => ct_eq(&sha1(pw, &[]), d),
            Self::Ssha(d, salt) => ct_eq(&sha1(pw, salt), d),
            Self::Md5Crypt(magic, salt, d) => ct_eq(&md5_crypt(pw, magic.as_bytes(), salt), d),
            Self::Plain(d) => ct_eq(&sha256(pw), d),
        }
    }
}

/// At most the first 4 characters of an unrecognised hash, and only when it
/// starts like a scheme (`$id$`, `{NAME}`): anything else may be a password
/// pasted in by mistake, which must not reach a log.
fn shown(h: &str) -> String {
    match h.chars().count() {
        0 => "(empty hash)".into(),
        _ if !h.starts_with(['$', '{']) => "(no `$id$` or `{SCHEME}` prefix)".into(),
        n => format!("`{}...`", h.chars().take(4.min(n - 1)).collect::<String>()),
    }
}

/// Splits `salt$digest` (after the magic) and decodes the digest.
fn md5_parse(rest: &str) -> Result<(&str, [u8; 16]), &'static str> {
    let (salt, enc) = rest.split_once('$').ok_or("no `$` after the salt")?;
    if salt.len() > 8 {
        return Err("salt longer than 8 characters");
    }
    Ok((
        salt,
        md5_decode(enc).ok_or("digest is not 22 crypt-base64 characters")?,
    ))
}

/// MD5-crypt's digest from crypt base64: 22 characters, least significant
/// first, bytes in [`MD5_ORDER`] then byte 11 alone (whose 4 spare bits must
/// be zero, so one digest has one spelling).
fn md5_decode(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 22 {
        return None;
    }
    let sextet = |i: usize| ITOA64.iter().position(|&c| c == b[i]).map(|p| p as u32);
    let group = |at: usize, n: usize| {
        (0..n)
            .rev()
            .try_fold(0, |v, k| Some(v << 6 | sextet(at + k)?))
    };
    let mut d = [0u8; 16];
    for (g, [x, y, z]) in MD5_ORDER.into_iter().enumerate() {
        let v = group(4 * g, 4)?;
        (d[x], d[y], d[z]) = ((v >> 16) as u8, (v >> 8) as u8, v as u8);
    }
    d[11] = u8::try_from(group(20, 2)?).ok()?;
    Some(d)
}

/// MD5-crypt (Poul-Henning Kamp's, which Apache's `$apr1$` reuses with
/// another magic): an MD5 of password, magic and salt, stirred 1000 times.
fn md5_crypt(pw: &[u8], magic: &[u8], salt: &[u8]) -> [u8; 16] {
    let alt = Md5::digest([pw, salt, pw].concat());
    let mut ctx = Md5::new_with_prefix([pw, magic, salt].concat());
    for chunk in pw.chunks(16) {
        ctx.update(&alt[..chunk.len()]);
    }
    let mut i = pw.len();
    while i != 0 {
        // The C original feeds `pw[0]` or the byte of an empty string: NUL.
        ctx.update(if i & 1 == 1 { &[0][..] } else { &pw[..1] });
        i >>= 1;
    }
    let mut d: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let prev = d;
        let (first, last) = if round % 2 == 1 {
            (pw, &prev[..])
        } else {
            (&prev[..], pw)
        };
        let mut c = Md5::new_with_prefix(first);
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        d = c.chain_update(last).finalize().into();
    }
    d
}

/// SHA-1 of `pw` then `salt`.
fn sha1(pw: &[u8], salt: &[u8]) -> [u8; 20] {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &[pw, salt].concat());
    d.as_ref().try_into().unwrap_or_default()
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    d.as_ref().try_into().unwrap_or_default()
}

/// Equality that takes the same time wherever two equal-length digests differ.
fn ct_eq<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Splits `user:hash[:comment]` and decodes the hash; an error carries the
/// user when there is one, and never the hash.
fn parse_entry(entry: &str) -> Result<(&str, Hash), (Option<&str>, String)> {
    let (user, rest) = entry
        .split_once(':')
        .ok_or((None, "no `:` between user and hash".into()))?;
    if user.is_empty() {
        return Err((None, "empty user name".into()));
    }
    if user.chars().any(char::is_control) {
        return Err((Some(user), "the user name has a control character".into()));
    }
    let hash = rest.split_once(':').map_or(rest, |(hash, _comment)| hash);
    Hash::parse(hash)
        .map(|h| (user, h))
        .map_err(|why| (Some(user), why))
}

/// A parsed htpasswd file: user → hash. The first entry for a user wins (as
/// nginx reads the file top-down).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
}

/// A line that was skipped, with its 1-based number and why (e.g. "unknown
/// hash format `$6$...`": at most the first 4 characters of a hash, never
/// the whole hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The line's number, from 1.
    pub line: usize,
    /// Why it was skipped; it never quotes the hash.
    pub reason: String,
}

impl Htpasswd {
    /// Parses a whole file's text. Blank lines and lines starting with `#`
    /// are ignored silently; every other line must be `user:hash`
    /// (optionally a third `:comment` field as Apache allows); bad lines are
    /// skipped and reported, the rest kept.
    ///
    /// Lines are trimmed of surrounding white space. A user's later lines
    /// are skipped too, even when the first was bad: like nginx, which stops
    /// at the first line naming the user, such a user cannot log in.
    pub fn parse(text: &str) -> (Htpasswd, Vec<Skipped>) {
        let mut list = Htpasswd::default();
        let mut skipped = Vec::new();
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let (line, entry) = (i + 1, line.trim());
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let mut skip = |reason: String| skipped.push(Skipped { line, reason });
            let (user, result) = match parse_entry(entry) {
                Ok((user, hash)) => (user, Ok(hash)),
                Err((Some(user), why)) => (user, Err(why)),
                Err((None, why)) => {
                    skip(why);
                    continue;
                }
            };
            if let Some(first) = first_line.get(user) {
                skip(format!(
                    "user {user:?} is already on line {first} (the first entry wins)"
                ));
                continue;
            }
            first_line.insert(user, line);
            match result {
                Ok(hash) => {
                    list.users.insert(user.to_owned(), hash);
                }
                Err(why) => skip(format!("user {user:?}: {why}")),
            }
        }
        (list, skipped)
    }

    /// Parses a label value `user:hash,user:hash` (commas separate entries;
    /// surrounding spaces trimmed). Unlike a file, any bad entry is an error
    /// (a message naming the user and why), since a label is all-or-nothing.
    ///
    /// Empty entries (a trailing comma) are ignored; a user listed twice is an error.
    pub fn parse_list(list: &str) -> Result<Htpasswd, String> {
        let mut out = Htpasswd::default();
        for (i, entry) in list.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let (user, hash) = parse_entry(entry).map_err(|(user, why)| match user {
                Some(user) => format!("user {user:?}: {why}"),
                None => format!("entry {}: {why}", i + 1),
            })?;
            match out.users.entry(user.to_owned()) {
                Entry::Occupied(_) => return Err(format!("user {user:?} is listed twice")),
                Entry::Vacant(slot) => {
                    slot.insert(hash);
                }
            }
        }
        Ok(out)
    }

    /// Whether `user` is listed.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Digests are compared in constant time
    /// (bcrypt by its crate). An unknown user is `false`.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.users
            .get(user)
            .is_some_and(|hash| hash.verify(password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (password, hash), made by `htpasswd -nb[B|m|s]`, `openssl passwd -1/-apr1`,
    /// libxcrypt's crypt(3) (`$2a$`, `$2b$`) and `openssl sha1` (`{SSHA}`).
    const VECTORS: &[(&str, &str)] = &[
        (
            "correct horse",
            "$2y$04$UpdaHd9TdkqcFLG1PCLXG.cNDE4GVwhmDHKC02wcFPqhkBWJdVdja",
        ),
        (
            "hunter2",
            "$2y$05$.egRUxMnEzjwRvgx.3w1XuNWXa..RQhtpo6mTrwfInFJqHepjJMom",
        ),
        (
            "",
            "$2y$04$TCF9XeZlE8b.LZGrj4JTbeuUp7Z6j21ri1H1bGO/DPrQmuOrr0.I6",
        ),
        (
            "pässwörd€",
            "$2y$04$pc1nMiJ92v.7KLH87rS8euNKENGaLH5Cx/aYP35yqrXykCo73z5Q6",
        ),
        (
            "hunter2",
            "$2a$04$ABCDEFGHIJKLMNOPQRSTUuJpKAV2XDDA/iejWFu3tzYAxBETWIgAe",
        ),
        (
            "pässwörd€",
            "$2b$04$ZYXWVUTSRQPONMLKJIHGFeFsKmw/LDJkXYqXf8EZo0dNvxdfzlcvq",
        ),
        ("apr1-pass", "$apr1$6lnTnCaP$eqg8wYLclcAdDOVsUjiAa1"),
        ("pässwörd€", "$apr1$nRcEgxfl$DKpg7B1L8SPG1eG4oUGuX/"),
        ("", "$apr1$Jx.pIP2B$u2wJJ6tj.tw2PRHM99P211"),
        ("apr-salt8", "$apr1$ABCDEFGH$I3GgTC04JeL41FWtMT.v71"),
        ("md5-pass", "$1$abcdefgh$QDzVj6N8.axjJ3VSCVMwD0"),
        ("ünïcødé", "$1$xy$1OH.DwAbLgfPCtpFP9Qb11"),
        ("", "$1$q$VvUsiFTLyG0ZtK9Li3rzF/"),
        ("sha-pass", "{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI="),
        ("", "{SHA}2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
        ("ünïcødé", "{SHA}4xZb4IFmX74yHMM0xxqECbMS5pI"), // unpadded
        ("ssha-pass", "{SSHA}aGmPyUN3uhGB+zTiKiSNkUNxlsUB/noz"),
        ("ünï", "{SSHA}r5aCCz0XP1M+9KHJtwOg/lYuA1tzYWx0c2FsdA=="),
        ("plain", "{PLAIN}plain: a comment"),
        ("", "{PLAIN}"),
    ];
    const APR1: &str = VECTORS[6].1; // apr1-pass
    const SHA: &str = VECTORS[13].1; // sha-pass
    const SHA512: &str = "$6$abc$MtSdWSZbhct2oe.SOqOUM2M/GA/uj5.vyVtJgRHgKi9uqXuWuJqOYE7H/YlsYGVg/YYzDV0xt3fEIwYt580.5.";
    const ARGON: &str = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA";

    #[test]
    fn every_format_verifies_only_its_password() {
        for &(pw, hash) in VECTORS {
            let (list, skipped) = Htpasswd::parse(&format!("u:{hash}\n"));
            assert_eq!(skipped, [], "{hash}");
            assert!(list.verify("u", pw.as_bytes()), "{hash} with {pw:?}");
            let drop_first = pw.chars().skip(1).collect();
            for w in [
                format!("{pw}x"),
                pw.to_uppercase(),
                drop_first,
                String::new(),
            ] {
                assert!(
                    w == pw || !list.verify("u", w.as_bytes()),
                    "{hash} with {w:?}"
                );
            }
            assert!(!list.verify("v", pw.as_bytes()) && !list.verify("U", pw.as_bytes()));
        }
    }

    #[test]
    fn bcrypt_counts_72_bytes_like_crypt() {
        // `htpasswd -nbB -C 5 long "$(printf 'a%.0s' $(seq 80))"`
        let hash = "$2y$05$YUzdHHWKMDCsaWLTJ7JL7upf3yE/yVqQnc3Vw1WND6skop.3lTV5q";
        let list = Htpasswd::parse_list(&format!("long:{hash}")).unwrap();
        assert!(list.verify("long", format!("{}bbbbbbbb", "a".repeat(72)).as_bytes()));
        assert!(!list.verify("long", "a".repeat(71).as_bytes()));
    }

    #[test]
    fn file_skips_bad_lines_and_keeps_the_rest() {
        let text = format!(
            "# users\n\n  \nalice:{APR1}:Alice A.\r\nsha512:{SHA512}\ngarbage line\n  bob:{SHA}  \n\
             des:/vfzjsL7BJYSM\nempty:\n:{SHA}\nalice:{SHA}\n\tcarol:x\n# end"
        );
        let (list, skipped) = Htpasswd::parse(&text);
        let lines: Vec<usize> = skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [5, 6, 8, 9, 10, 11, 12], "{skipped:?}");
        let why = [
            "user \"sha512\": unknown hash format `$6$a...`",
            "no `:`",
            "DES crypt is not supported",
            "(empty hash)",
            "empty user",
            "user \"alice\" is already on line 4",
            "no `$id$` or `{SCHEME}` prefix",
        ];
        for (s, why) in skipped.iter().zip(why) {
            assert!(s.reason.contains(why), "{s:?}");
        }
        assert!(list.len() == 2 && list.contains("alice") && !list.contains("sha512"));
        assert!(list.verify("alice", b"apr1-pass") && list.verify("bob", b"sha-pass"));
        assert!(!list.verify("alice", b"sha-pass") && !list.verify("carol", b"x"));
    }

    #[test]
    fn first_entry_wins_even_when_bad() {
        let (list, _) = Htpasswd::parse(&format!("u:{SHA}\nu:{APR1}"));
        assert!(list.verify("u", b"sha-pass") && !list.verify("u", b"apr1-pass"));
        // nginx stops at the first `u` line too: a bad one locks `u` out.
        let (list, skipped) = Htpasswd::parse(&format!("u:{SHA512}\nu:{APR1}\nv:{APR1}"));
        assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 2]);
        assert!(!list.contains("u") && !list.verify("u", b"apr1-pass"));
        assert!(list.verify("v", b"apr1-pass"));
    }

    #[test]
    fn malformed_known_formats_are_skipped_at_parse() {
        let bad = [
            "$2y$04$UpdaHd9TdkqcFLG1PCLXG.cNDE4GVwhmDHKC02wcFPqhkBWJdVdj", // short
            "$2y$31$UpdaHd9TdkqcFLG1PCLXG.cNDE4GVwhmDHKC02wcFPqhkBWJdVdja", // cost
            "$2x$04$UpdaHd9TdkqcFLG1PCLXG.cNDE4GVwhmDHKC02wcFPqhkBWJdVdja", // buggy $2x$
            "$apr1$123456789$MHxs02Nh3drkOBdWF2IQs0",                      // salt
            "$apr1$6lnTnCaP$eqg8wYLclcAdDOVsUjiAa9",                       // spare bits
            "$1$abcdefghQDzVj6N8.axjJ3VSCVMwD0",
            "{SHA}xO2etOilyqtV8o1RvvnmkeBx7Q==",
            "{SSHA}aGmPyUN3uhGB+zTiKiSNkUNx",
            "{sha}xO2etOilyqtV8o1RvvnmkeBx7QI=",
        ];
        for h in bad {
            let (list, skipped) = Htpasswd::parse(&format!("u:{h}\nok:{SHA}"));
            assert!(list.len() == 1 && list.verify("ok", b"sha-pass"), "{h}");
            assert!(
                skipped.len() == 1 && !skipped[0].reason.contains(&h[4..]),
                "{skipped:?}"
            );
            assert!(Htpasswd::parse_list(&format!("u:{h}")).is_err(), "{h}");
        }
    }

    #[test]
    fn reasons_never_quote_a_hash_or_a_pasted_password() {
        for h in [
            SHA512,
            ARGON,
            "{SSHA512}abc",
            "Tr0ub4dor&3",
            "/vfzjsL7BJYSM",
            "$6$",
        ] {
            let (_, skipped) = Htpasswd::parse(&format!("u:{h}"));
            let reason = &skipped[0].reason;
            assert!(
                reason.starts_with("user \"u\": ") && !reason.contains(h),
                "{reason}"
            );
            // At most 4 characters in a row, and none of one without a scheme.
            let chars: Vec<char> = h.chars().collect();
            let longest = if h.starts_with(['$', '{']) { 5 } else { 3 };
            for w in chars.windows(longest) {
                assert!(!reason.contains(&w.iter().collect::<String>()), "{reason}");
            }
        }
        let (list, _) = Htpasswd::parse(&format!("u:{}", VECTORS[0].1));
        assert!(!format!("{list:?}").contains("UpdaHd"));
    }

    #[test]
    fn parse_list_is_all_or_nothing() {
        let list = Htpasswd::parse_list(&format!(" alice:{} , bob:{APR1},", VECTORS[0].1));
        let list = list.unwrap();
        assert!(list.len() == 2 && list.verify("alice", b"correct horse"));
        assert!(list.verify("bob", b"apr1-pass") && !list.verify("alice", b"apr1-pass"));
        let err = |s: String| Htpasswd::parse_list(&s).unwrap_err();
        let e = err(format!("alice:{APR1},bob:{SHA512}"));
        assert!(e.starts_with("user \"bob\": unknown hash format") && !e.contains(SHA512));
        assert!(err(format!("alice:{APR1},hunter2")).starts_with("entry 2: no `:`"));
        assert!(err(format!("a:{SHA},a:{APR1}")).contains("\"a\" is listed twice"));
        assert!(err("a\u{7}b:{PLAIN}x".into()).contains("control character"));
    }
}
