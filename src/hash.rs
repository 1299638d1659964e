//! A fast hasher for maps whose keys the process chose itself: connection
//! ids (a counter), route hosts (the operator's routes and labels), metric
//! labels (route names, status codes, method names).
//!
//! Std's default, SipHash with a random key, is built for maps a client can
//! fill with keys of its choosing; none of these is such a map (a client's
//! host is only ever *looked up* in the route table, never inserted), and
//! SipHash was a measurable part of every request (about 250 instructions for
//! the metrics counter, 100 for the route lookup) and of every accepted
//! connection. Do not use it for a map a client can insert into.

use std::hash::{BuildHasherDefault, Hasher};

/// The [`std::hash::BuildHasher`] of [`FastHasher`]; `HashMap<K, V, Fast>`
/// and `DashMap<K, V, Fast>` are built with `default()`.
pub type Fast = BuildHasherDefault<FastHasher>;

/// A `HashMap` hashed with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, Fast>;

/// Multiplicative word-at-a-time hashing (the scheme of rustc's FxHash): each
/// 8-byte word is mixed in with a rotate, a xor and one multiplication by an
/// odd constant (2^64 / φ), and `finish` rotates the well-mixed high bits
/// down to where hash tables take their bucket index.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length too, so "a" and "a\0" differ.
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    fn hash<T: std::hash::Hash + ?Sized>(v: &T) -> u64 {
        Fast::default().hash_one(v)
    }

    #[test]
    fn equal_keys_hash_alike_and_near_keys_apart() {
        assert_eq!(hash("app.foo.bar"), hash("app.foo.bar"));
        assert_ne!(hash("a"), hash("a\0"));
        assert_ne!(hash("app1.foo.bar"), hash("app2.foo.bar"));
        assert_ne!(hash(&(1u64, 2u16)), hash(&(2u64, 1u16)));
    }

    /// Sequential ids and hosts that differ in one character spread over a
    /// table's buckets (the low bits) and its tag and shard bits (the high
    /// ones): no more than a few collisions in 2^16 buckets.
    #[test]
    fn counters_and_similar_hosts_spread_over_low_and_high_bits() {
        let ids: Vec<u64> = (0..4096u64).map(|i| hash(&i)).collect();
        let hosts: Vec<u64> = (0..4096)
            .map(|i| hash(format!("feature-{i}.api-main.foo.bar").as_str()))
            .collect();
        for set in [ids, hosts] {
            let low: HashSet<u64> = set.iter().map(|h| h & 0xffff).collect();
            let high: HashSet<u64> = set.iter().map(|h| h >> 48).collect();
            assert!(low.len() > 3900, "low bits: {} distinct of 4096", low.len());
            assert!(
                high.len() > 3900,
                "high bits: {} distinct of 4096",
                high.len()
            );
        }
    }
}
