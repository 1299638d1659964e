//! The RFC 2136 client behind `DnsSolver::Rfc2136` (see [`super`]): finds
//! the zone with an SOA query, sends one TSIG-signed UPDATE per record and
//! checks the answer, each exchange over TCP and bounded in time. Messages
//! are written and read by [`super::wire`], signed by [`super::tsig`].

use std::io;
use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::wire::{
    OPCODE_QUERY, OPCODE_UPDATE, Reply, TYPE_SOA, parse_reply, query_message, update_message,
};
use super::{DnsError, Op, Rcode, Rfc2136};

/// How long one DNS exchange (connect, send, answer) may take.
pub(super) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 literal.
pub(super) fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("expected HOST or HOST:PORT, not {s:?}");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad());
    }
    if host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
        return Err(bad());
    }
    let port = match port {
        None => 53,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("bad port {p:?}")),
        },
    };
    Ok((host.to_owned(), port))
}

impl Rfc2136 {
    /// `HOST:PORT` as the operator wrote it, for messages.
    pub(super) fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(super) async fn update(&self, op: Op, name: &str, value: &str) -> Result<(), DnsError> {
        let zone = self.find_zone(name).await?;
        let id = random_id();
        let mut msg =
            update_message(id, &zone, name, value, op).map_err(|why| DnsError::BadName {
                name: name.to_owned(),
                why,
            })?;
        let request_mac = self.key.sign(&mut msg, unix_now());
        let answer = self.exchange(&msg).await?;
        let reply = self.reply(&answer, id, OPCODE_UPDATE)?;
        let refused = |rcode, tsig| DnsError::Refused {
            server: self.server(),
            name: name.to_owned(),
            zone: zone.clone(),
            rcode: Rcode(rcode),
            tsig,
        };
        match &reply.tsig {
            Some(tsig) if tsig.error != 0 => {
                return Err(refused(reply.rcode, Some(Rcode(tsig.error))));
            }
            _ if reply.rcode != 0 => return Err(refused(reply.rcode, None)),
            Some(tsig) => self
                .key
                .verify(&answer, tsig, &request_mac, unix_now())
                .map_err(|why| DnsError::BadSignature {
                    server: self.server(),
                    why,
                })?,
            // RFC 8945 wants a signed answer; a server that does not sign
            // still said NOERROR, and the ACME validation will tell.
            None => {
                tracing::warn!(server = %self.server(), "DNS UPDATE answer is not TSIG-signed");
            }
        }
        let action = op.as_str();
        tracing::debug!(server = %self.server(), zone, name, action, "TXT record updated");
        Ok(())
    }

    /// The zone holding `name`: the owner of the SOA record the server puts
    /// in the answer (`name` is the apex) or in the authority section.
    async fn find_zone(&self, name: &str) -> Result<String, DnsError> {
        let id = random_id();
        let query = query_message(id, name, TYPE_SOA).map_err(|why| DnsError::BadName {
            name: name.to_owned(),
            why,
        })?;
        let answer = self.exchange(&query).await?;
        let reply = self.reply(&answer, id, OPCODE_QUERY)?;
        match reply.soa {
            Some(zone) if is_within(name, &zone) => Ok(zone),
            _ => Err(DnsError::NoZone {
                name: name.to_owned(),
                server: self.server(),
                rcode: Rcode(reply.rcode),
            }),
        }
    }

    /// Parses `answer` and checks that it answers message `id`.
    fn reply(&self, answer: &[u8], id: u16, opcode: u16) -> Result<Reply, DnsError> {
        let malformed = |why| DnsError::Malformed {
            server: self.server(),
            why,
        };
        let reply = parse_reply(answer).map_err(malformed)?;
        if reply.id != id {
            return Err(malformed("it answers another message id"));
        }
        if reply.flags & 0x8000 == 0 || (reply.flags >> 11) & 0xF != opcode {
            return Err(malformed("it is not a response to the message sent"));
        }
        Ok(reply)
    }

    /// One exchange over TCP (two-byte length prefix), bounded in time.
    async fn exchange(&self, msg: &[u8]) -> Result<Vec<u8>, DnsError> {
        let io = async {
            let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
            let len = u16::try_from(msg.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
            let mut framed = Vec::with_capacity(msg.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(msg);
            stream.write_all(&framed).await?;
            let len = stream.read_u16().await?;
            let mut answer = vec![0; len.into()];
            stream.read_exact(&mut answer).await?;
            Ok::<_, io::Error>(answer)
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, io).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(DnsError::Unreachable {
                server: self.server(),
                source,
            }),
            Err(_) => Err(DnsError::Timeout {
                server: self.server(),
            }),
        }
    }
}

/// Whether `name` is `zone` or below it (case-insensitively).
fn is_within(name: &str, zone: &str) -> bool {
    if zone.is_empty() {
        return true;
    }
    let (name, zone) = (name.as_bytes(), zone.as_bytes());
    name.len() >= zone.len()
        && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
        && (name.len() == zone.len() || name[name.len() - zone.len() - 1] == b'.')
}

fn random_id() -> u16 {
    match ring::rand::generate::<[u8; 2]>(&ring::rand::SystemRandom::new()) {
        Ok(bytes) => u16::from_be_bytes(bytes.expose()),
        // The id only pairs an answer with its question over one TCP
        // connection; the clock is a fine fallback.
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
