//! IP allow lists: `branchgate.allow` per route, `--branch-allow` for the
//! branch domain. Parsed once (at label or flag time), matched per request
//! by a few integer compares, no allocation.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address or CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Addresses allowed to reach a route: `10.0.0.0/8,192.168.1.7,fd00::/8`.
/// Everything else is answered 403.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllowList(Box<[Net]>);

impl AllowList {
    /// Whether `ip` is on the list (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address, as a dual-stack socket reports IPv4 clients).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(ip))
    }
}

impl FromStr for AllowList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))?;
            let addr = addr.to_canonical();
            let full = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => full,
                Some(p) => match p.parse::<u8>() {
                    Ok(p) if p <= full => p,
                    _ => return Err(format!("{item:?}: the prefix length must be 0-{full}")),
                },
            };
            let net = Net { addr, prefix };
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        if nets.is_empty() {
            return Err("no address in the list (an empty list would refuse everyone)".into());
        }
        Ok(Self(nets.into()))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_single_addresses_match() {
        let l: AllowList = " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,".parse().unwrap();
        for yes in [
            "10.1.2.3",
            "10.255.255.255",
            "192.168.1.7",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(l.allows(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "fe80::1", "127.0.0.1", "::1"] {
            assert!(!l.allows(ip(no)), "{no}");
        }
        assert_eq!(l.to_string(), "10.0.0.0/8,192.168.1.7,fd00::/8");
        let all: AllowList = "0.0.0.0/0,::/0".parse().unwrap();
        assert!(all.allows(ip("1.2.3.4")) && all.allows(ip("2001:db8::1")));
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (bad, says) in [
            ("10.0.0.0/33", "prefix length must be 0-32"),
            ("::/129", "0-128"),
            ("example.com", "not an IP address"),
            (" , ", "no address"),
            ("10.0.0.1/x", "prefix length"),
        ] {
            let e = bad.parse::<AllowList>().unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
