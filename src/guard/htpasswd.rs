//! TEMPORARY compile stub; replaced by the real module.
#![allow(missing_docs)]
use std::collections::HashMap;
use base64::Engine as _;
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Htpasswd { users: HashMap<String, String> }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped { pub line: usize, pub reason: String }
impl Htpasswd {
    pub fn parse(text: &str) -> (Htpasswd, Vec<Skipped>) {
        let mut h = Htpasswd::default(); let mut sk = vec![];
        for (i, l) in text.lines().enumerate() { let l = l.trim(); if l.is_empty() || l.starts_with('#') {continue}
            match l.split_once(':') { Some((u, x)) if x.starts_with("{SHA}") => { h.users.entry(u.into()).or_insert(x.into()); } _ => sk.push(Skipped{line:i+1, reason:"unknown hash format".into()}) } }
        (h, sk)
    }
    pub fn parse_list(list: &str) -> Result<Htpasswd, String> { let (h, s) = Self::parse(&list.replace(',', "\n")); if s.is_empty() {Ok(h)} else {Err(format!("bad entry {list}"))} }
    pub fn contains(&self, u: &str) -> bool { self.users.contains_key(u) }
    pub fn len(&self) -> usize { self.users.len() }
    pub fn is_empty(&self) -> bool { self.users.is_empty() }
    pub fn verify(&self, u: &str, p: &[u8]) -> bool {
        let Some(h) = self.users.get(u) else { return false };
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, p);
        h[5..] == base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    }
}
