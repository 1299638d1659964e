//! DNS-01 solvers: where the ACME manager publishes the `_acme-challenge` TXT
//! records it is asked for, and removes them once the order is done.
//!
//! ```text
//! ACME manager ──present/cleanup──▶ DnsSolver ─┬─ Rfc2136: SOA query → zone,
//!                                              │    UPDATE + TSIG → primary server
//!                                              └─ Exec: SCRIPT present|cleanup NAME. VALUE
//! ```
//!
//! The RFC 2136 client is written by hand (it needs two messages, TCP and
//! HMAC), signs with TSIG (RFC 8945) and verifies the server's signature.
//! Records are added and removed one value at a time, because a name and its
//! wildcard share one `_acme-challenge` name with two values at once.

use std::fmt;
use std::io;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::hmac;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long one DNS exchange (connect, send, answer) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a hook may take to publish or remove a record.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// TTL of a published TXT record: it lives for minutes, and a resolver that
/// cached an earlier value must not keep it long.
const TXT_TTL: u32 = 60;
/// Clock skew allowed between us and the server (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;
/// How many lines of a failed hook's stderr its error keeps.
const STDERR_LINES: usize = 5;

const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const OPCODE_QUERY: u16 = 0;
const OPCODE_UPDATE: u16 = 5;

/// Where DNS-01 TXT records are published.
#[derive(Debug, Clone)]
pub enum DnsSolver {
    /// RFC 2136 dynamic updates, signed with TSIG, sent to one server.
    Rfc2136(Rfc2136),
    /// An external script, called as `SCRIPT present|cleanup NAME. VALUE`.
    Exec(PathBuf),
}

impl DnsSolver {
    /// From `--acme-dns`: `rfc2136://HOST:PORT` (HOST an IP literal or a name
    /// resolvable by the system; port default 53) or `exec:/path/to/script`.
    /// `tsig` is the parsed `--acme-dns-tsig`: required for rfc2136, refused
    /// with exec. Errors do not repeat the flag: the caller names it.
    pub fn parse(spec: &str, tsig: Option<TsigKey>) -> Result<Self, String> {
        if let Some(rest) = spec.strip_prefix("rfc2136://") {
            let key =
                tsig.ok_or_else(|| "needs --acme-dns-tsig NAME:ALGORITHM:SECRET-FILE".to_owned())?;
            let (host, port) = parse_host_port(rest.strip_suffix('/').unwrap_or(rest))?;
            Ok(Self::Rfc2136(Rfc2136 { host, port, key }))
        } else if let Some(path) = spec.strip_prefix("exec:") {
            if tsig.is_some() {
                return Err("--acme-dns-tsig is for rfc2136:// only".into());
            }
            check_hook(Path::new(path))?;
            Ok(Self::Exec(path.into()))
        } else {
            Err("expected rfc2136://HOST[:PORT] or exec:/path/to/script".into())
        }
    }

    /// Publishes TXT `value` at `fqdn` (e.g. `_acme-challenge.foo.bar`),
    /// beside any other value already there.
    pub async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run(Op::Present, fqdn, value).await
    }

    /// Removes exactly that TXT record; other values at the name stay.
    pub async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run(Op::Cleanup, fqdn, value).await
    }

    async fn run(&self, op: Op, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let fqdn = fqdn.strip_suffix('.').unwrap_or(fqdn);
        match self {
            Self::Rfc2136(server) => server.update(op, fqdn, value).await,
            Self::Exec(script) => run_hook(script, op, fqdn, value, HOOK_TIMEOUT).await,
        }
    }
}

/// An RFC 2136 primary server and the TSIG key its updates are signed with.
#[derive(Debug, Clone)]
pub struct Rfc2136 {
    host: String,
    port: u16,
    key: TsigKey,
}

/// What is done to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Present,
    Cleanup,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Cleanup => "cleanup",
        }
    }
}

/// A DNS RCODE, or a TSIG error code (they share one registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rcode(pub u16);

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            16 => "BADSIG",
            17 => "BADKEY",
            18 => "BADTIME",
            19 => "BADMODE",
            20 => "BADNAME",
            21 => "BADALG",
            22 => "BADTRUNC",
            23 => "BADCOOKIE",
            n => return write!(f, "RCODE {n}"),
        };
        f.write_str(name)
    }
}

/// Why a TXT record could not be published or removed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The server could not be reached, or dropped the connection.
    #[error("DNS server {server} unreachable")]
    Unreachable {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// What the connection reported.
        #[source]
        source: io::Error,
    },
    /// The server took longer than 10 s to answer.
    #[error("DNS server {server} did not answer within {}s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
    },
    /// The answer does not parse, or does not answer what was asked.
    #[error("DNS server {server} sent a malformed answer: {why}")]
    Malformed {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The server holds no zone containing the name.
    #[error("no zone found for {name} at DNS server {server} (SOA query answered {rcode})")]
    NoZone {
        /// The name to publish at.
        name: String,
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// The SOA query's RCODE.
        rcode: Rcode,
    },
    /// The server refused the update.
    #[error(
        "DNS server {server} refused the update of {name} in zone {zone}: {rcode}{}",
        tsig_note(*.tsig)
    )]
    Refused {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// The name updated.
        name: String,
        /// The zone the update was sent for.
        zone: String,
        /// The answer's RCODE.
        rcode: Rcode,
        /// The answer's TSIG error (BADSIG, BADKEY, BADTIME…), if any.
        tsig: Option<Rcode>,
    },
    /// The answer's TSIG signature does not check out.
    #[error("DNS server {server}'s answer fails TSIG verification: {why}")]
    BadSignature {
        /// `HOST:PORT` from `--acme-dns`.
        server: String,
        /// What does not check out.
        why: &'static str,
    },
    /// The name or the value cannot be written into a DNS message.
    #[error("cannot publish a TXT record at {name:?}: {why}")]
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The hook could not be started or waited for.
    #[error("cannot run DNS hook {}", script.display())]
    Hook {
        /// The script from `--acme-dns exec:`.
        script: PathBuf,
        /// What spawning or waiting reported.
        #[source]
        source: io::Error,
    },
    /// The hook exited unsuccessfully.
    #[error(
        "DNS hook {} {action} {name} failed with {status}{}",
        script.display(),
        stderr_note(.stderr)
    )]
    HookFailed {
        /// The script from `--acme-dns exec:`.
        script: PathBuf,
        /// `present` or `cleanup`.
        action: &'static str,
        /// The NAME argument (with its trailing dot).
        name: String,
        /// `exit status N`, or the signal that killed it.
        status: String,
        /// The last lines of its stderr, joined by ` | `.
        stderr: String,
    },
    /// The hook did not finish in time, and was killed.
    #[error(
        "DNS hook {} {action} {name} did not finish within {limit:?} and was killed",
        script.display()
    )]
    HookTimeout {
        /// The script from `--acme-dns exec:`.
        script: PathBuf,
        /// `present` or `cleanup`.
        action: &'static str,
        /// The NAME argument (with its trailing dot).
        name: String,
        /// How long it was given.
        limit: Duration,
    },
}

fn tsig_note(tsig: Option<Rcode>) -> String {
    tsig.map(|e| format!(", TSIG error {e}"))
        .unwrap_or_default()
}

fn stderr_note(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(", stderr: {stderr}")
    }
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 literal.
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
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
    fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn update(&self, op: Op, name: &str, value: &str) -> Result<(), DnsError> {
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

// ---------------------------------------------------------------- messages

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_u48(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes()[2..]);
}

/// Writes `name` (dotted, no trailing dot; "" is the root) uncompressed.
fn put_name(buf: &mut Vec<u8>, name: &str) -> Result<(), &'static str> {
    let start = buf.len();
    if !name.is_empty() {
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|len| (1..=63).contains(len))
                .ok_or("a label is empty or longer than 63 bytes")?;
            buf.push(len);
            buf.extend_from_slice(label.as_bytes());
        }
    }
    buf.push(0);
    if buf.len() - start > 255 {
        return Err("the name is longer than 255 bytes");
    }
    Ok(())
}

fn header(buf: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    put_u16(buf, id);
    put_u16(buf, flags);
    for count in counts {
        put_u16(buf, count);
    }
}

/// A query for `name`'s `rtype` in class IN.
fn query_message(id: u16, name: &str, rtype: u16) -> Result<Vec<u8>, &'static str> {
    let mut msg = Vec::with_capacity(64);
    header(&mut msg, id, OPCODE_QUERY << 11, [1, 0, 0, 0]);
    put_name(&mut msg, name)?;
    put_u16(&mut msg, rtype);
    put_u16(&mut msg, CLASS_IN);
    Ok(msg)
}

/// An UPDATE of `zone` adding (RFC 2136 §2.5.1) or deleting the one RR
/// (§2.5.4) `name TXT "value"`, without prerequisites.
fn update_message(
    id: u16,
    zone: &str,
    name: &str,
    value: &str,
    op: Op,
) -> Result<Vec<u8>, &'static str> {
    let mut msg = Vec::with_capacity(128);
    header(&mut msg, id, OPCODE_UPDATE << 11, [1, 0, 1, 0]);
    put_name(&mut msg, zone)?;
    put_u16(&mut msg, TYPE_SOA);
    put_u16(&mut msg, CLASS_IN);
    put_name(&mut msg, name)?;
    put_u16(&mut msg, TYPE_TXT);
    let (class, ttl) = match op {
        Op::Present => (CLASS_IN, TXT_TTL),
        Op::Cleanup => (CLASS_NONE, 0),
    };
    put_u16(&mut msg, class);
    put_u32(&mut msg, ttl);
    let rdata = txt_rdata(value);
    put_u16(
        &mut msg,
        u16::try_from(rdata.len()).map_err(|_| "the value is too long")?,
    );
    msg.extend_from_slice(&rdata);
    Ok(msg)
}

/// TXT RDATA: the value as character-strings of at most 255 bytes.
fn txt_rdata(value: &str) -> Vec<u8> {
    let mut rdata = Vec::with_capacity(value.len() + 1);
    let mut chunks = value.as_bytes().chunks(255).peekable();
    if chunks.peek().is_none() {
        rdata.push(0);
    }
    for chunk in chunks {
        rdata.push(chunk.len() as u8);
        rdata.extend_from_slice(chunk);
    }
    rdata
}

/// What is needed from an answer.
#[derive(Debug)]
struct Reply {
    id: u16,
    flags: u16,
    rcode: u16,
    /// The owner of the first SOA in the answer or authority section.
    soa: Option<String>,
    tsig: Option<TsigRecord>,
}

/// A TSIG RR read from an answer.
#[derive(Debug)]
struct TsigRecord {
    /// Where the RR starts: everything before it is signed.
    start: usize,
    key: String,
    algorithm: String,
    time: u64,
    fudge: u16,
    mac: Vec<u8>,
    original_id: u16,
    error: u16,
    other: Vec<u8>,
}

/// Reads a message, following compression pointers.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let bytes = self
            .msg
            .get(self.pos..self.pos + n)
            .ok_or("it ends too early")?;
        self.pos += n;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u48(&mut self) -> Result<u64, &'static str> {
        let b = self.take(6)?;
        Ok(b.iter().fold(0, |acc, &byte| acc << 8 | u64::from(byte)))
    }

    /// A name, dotted without the trailing dot, lowercased. Each pointer must
    /// point before the previous one's target, so reading ends.
    fn name(&mut self) -> Result<String, &'static str> {
        let mut out = String::new();
        let mut pos = self.pos;
        let mut limit = self.pos;
        let mut resume = None;
        let mut wire_len = 1;
        loop {
            let len = *self.msg.get(pos).ok_or("a name runs past the end")?;
            match len & 0xC0 {
                0x00 if len == 0 => break,
                0x00 => {
                    let len = usize::from(len);
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + len)
                        .ok_or("a name runs past the end")?;
                    wire_len += len + 1;
                    if wire_len > 255 {
                        return Err("a name is longer than 255 bytes");
                    }
                    if !out.is_empty() {
                        out.push('.');
                    }
                    for &b in label {
                        match b {
                            b'.' | b'\\' | ..=b' ' | 0x7F.. => out.push_str(&format!("\\{b:03}")),
                            _ => out.push(char::from(b.to_ascii_lowercase())),
                        }
                    }
                    pos += 1 + len;
                }
                0xC0 => {
                    let low = *self.msg.get(pos + 1).ok_or("a name runs past the end")?;
                    let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                    if target >= limit {
                        return Err("a compression pointer points forward");
                    }
                    resume.get_or_insert(pos + 2);
                    limit = target;
                    pos = target;
                }
                _ => return Err("a name uses a reserved label type"),
            }
        }
        self.pos = resume.unwrap_or(pos + 1);
        Ok(out)
    }
}

fn parse_reply(msg: &[u8]) -> Result<Reply, &'static str> {
    let mut r = Reader { msg, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let [qd, an, ns, ar] = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..qd {
        r.name()?;
        r.take(4)?;
    }
    let (answers, total) = (
        u32::from(an) + u32::from(ns),
        u32::from(an) + u32::from(ns) + u32::from(ar),
    );
    let mut soa = None;
    let mut tsig = None;
    for i in 0..total {
        let start = r.pos;
        let owner = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let _ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let rdata_start = r.pos;
        r.take(len)?;
        if rtype == TYPE_SOA && i < answers && soa.is_none() {
            soa = Some(owner);
        } else if rtype == TYPE_TSIG {
            if i + 1 != total || i < answers {
                return Err("its TSIG record is not the last one");
            }
            let mut rd = Reader {
                msg,
                pos: rdata_start,
            };
            tsig = Some(TsigRecord {
                start,
                key: owner,
                algorithm: rd.name()?,
                time: rd.u48()?,
                fudge: rd.u16()?,
                mac: {
                    let len = rd.u16()?;
                    rd.take(len.into())?.to_vec()
                },
                original_id: rd.u16()?,
                error: rd.u16()?,
                other: {
                    let len = rd.u16()?;
                    rd.take(len.into())?.to_vec()
                },
            });
            if rd.pos != rdata_start + len {
                return Err("its TSIG record has a wrong length");
            }
        }
    }
    Ok(Reply {
        id,
        flags,
        rcode: flags & 0xF,
        soa,
        tsig,
    })
}

// -------------------------------------------------------------------- TSIG

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
    fn sign(&self, msg: &mut Vec<u8>, now: u64) -> Vec<u8> {
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
    fn verify(
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

// -------------------------------------------------------------------- hook

/// Checks at start-up that the hook is an executable file.
fn check_hook(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot use hook: {e}"))?;
    if !meta.is_file() {
        return Err("the hook is not a file".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("the hook is not executable".into());
    }
    Ok(())
}

/// Runs `script ACTION NAME. VALUE`; exit 0 means the record is live (or
/// gone). The script and anything it started are killed after `limit`.
async fn run_hook(
    script: &Path,
    op: Op,
    fqdn: &str,
    value: &str,
    limit: Duration,
) -> Result<(), DnsError> {
    let name = format!("{fqdn}.");
    let hook_err = |source| DnsError::Hook {
        script: script.to_owned(),
        source,
    };
    let child = tokio::process::Command::new(script)
        .args([op.as_str(), &name, value])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also kills what it started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(hook_err)?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output.map_err(hook_err)?,
        Err(_) => {
            if let Some(group) = group {
                // Already gone is fine; kill_on_drop covers the script.
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            return Err(DnsError::HookTimeout {
                script: script.to_owned(),
                action: op.as_str(),
                name,
                limit,
            });
        }
    };
    if output.status.success() {
        tracing::debug!(
            script = %script.display(),
            action = op.as_str(),
            name,
            stdout = %String::from_utf8_lossy(&output.stdout).trim(),
            "DNS hook done"
        );
        return Ok(());
    }
    Err(DnsError::HookFailed {
        script: script.to_owned(),
        action: op.as_str(),
        name,
        status: describe_status(output.status),
        stderr: last_lines(&output.stderr, STDERR_LINES),
    })
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The last `n` non-empty lines of `bytes`, joined by ` | `.
fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn names_are_written_as_uncompressed_labels() {
        let mut buf = Vec::new();
        put_name(&mut buf, "_acme-challenge.Foo.bar").unwrap();
        assert_eq!(buf, b"\x0f_acme-challenge\x03Foo\x03bar\x00");
        let mut root = Vec::new();
        put_name(&mut root, "").unwrap();
        assert_eq!(root, [0]);
        assert!(put_name(&mut Vec::new(), "a..b").is_err());
        assert!(put_name(&mut Vec::new(), &"x".repeat(64)).is_err());
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(
            put_name(&mut Vec::new(), &long),
            Err("the name is longer than 255 bytes")
        );
    }

    #[test]
    fn updates_add_or_delete_exactly_one_txt_record() {
        let add = update_message(
            0x1234,
            "foo.bar",
            "_acme-challenge.foo.bar",
            "abc",
            Op::Present,
        )
        .unwrap();
        let mut expected = vec![0x12, 0x34, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0];
        expected.extend_from_slice(b"\x03foo\x03bar\x00\x00\x06\x00\x01");
        expected.extend_from_slice(b"\x0f_acme-challenge\x03foo\x03bar\x00");
        expected.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 60, 0, 4, 3, b'a', b'b', b'c']);
        assert_eq!(add, expected);

        let delete = update_message(
            0x1234,
            "foo.bar",
            "_acme-challenge.foo.bar",
            "abc",
            Op::Cleanup,
        )
        .unwrap();
        assert_eq!(delete[..delete.len() - 14], add[..add.len() - 14]);
        assert_eq!(
            delete[delete.len() - 14..],
            [0, 16, 0, 254, 0, 0, 0, 0, 0, 4, 3, b'a', b'b', b'c']
        );
    }

    #[test]
    fn long_values_are_split_into_255_byte_strings() {
        let rdata = txt_rdata(&"v".repeat(300));
        assert_eq!(rdata.len(), 302);
        assert_eq!((rdata[0], rdata[256]), (255, 45));
        assert_eq!(txt_rdata(""), [0]);
    }

    #[test]
    fn answers_with_compression_pointers_parse() {
        // NXDOMAIN for _acme-challenge.x.foo.bar SOA; the authority SOA's
        // owner and names point into the question ("foo.bar" at 30).
        let mut msg = vec![0xab, 0xcd, 0x84, 0x03, 0, 1, 0, 0, 0, 1, 0, 0];
        msg.extend_from_slice(b"\x0f_acme-challenge\x01x\x03Foo\x03bar\x00\x00\x06\x00\x01");
        msg.extend_from_slice(&[0xC0, 30, 0, 6, 0, 1, 0, 0, 0, 60, 0, 27]);
        msg.extend_from_slice(&[2, b'n', b's', 0xC0, 30, 0xC0, 30]);
        msg.extend_from_slice(&[0; 20]);
        let reply = parse_reply(&msg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((reply.id, reply.rcode), (0xabcd, 3));
        assert_eq!(reply.soa.as_deref(), Some("foo.bar"));
        assert!(reply.tsig.is_none());
    }

    #[test]
    fn pointer_loops_and_short_messages_are_errors() {
        let header = [0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let itself = [&header[..], &[0xC0, 12, 0, 6, 0, 1]].concat();
        assert!(parse_reply(&itself).is_err());
        let back_to_label = [&header[..], &[1, b'a', 0xC0, 12, 0, 6, 0, 1]].concat();
        assert!(parse_reply(&back_to_label).is_err());
        assert!(parse_reply(&header[..5]).is_err());
        let mut r = Reader {
            msg: &[3, b'a'],
            pos: 0,
        };
        assert!(r.name().is_err());
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
    fn rcodes_and_tsig_errors_have_names() {
        assert_eq!(Rcode(9).to_string(), "NOTAUTH");
        assert_eq!(Rcode(16).to_string(), "BADSIG");
        assert_eq!(Rcode(42).to_string(), "RCODE 42");
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="; // "secret-secret-secret"

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

    fn executable(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn solver_specs_parse_or_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let file = write(d, "key", SECRET);
        let key = || Some(TsigKey::parse(&format!("acme:hmac-sha256:{file}")).unwrap());
        let server = |spec: &str| match DnsSolver::parse(spec, key()) {
            Ok(DnsSolver::Rfc2136(s)) => s.server(),
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(server("rfc2136://127.0.0.1"), "127.0.0.1:53");
        assert_eq!(
            server("rfc2136://ns1.example.net:5353/"),
            "ns1.example.net:5353"
        );
        assert_eq!(server("rfc2136://[::1]:5353"), "[::1]:5353");
        assert_eq!(server("rfc2136://::1"), "[::1]:53");

        let err = |spec: &str, tsig| DnsSolver::parse(spec, tsig).unwrap_err();
        assert!(err("rfc2136://127.0.0.1", None).contains("needs --acme-dns-tsig"));
        assert!(err("rfc2136://127.0.0.1:0", key()).contains("bad port \"0\""));
        assert!(err("rfc2136://h:x", key()).contains("bad port \"x\""));
        assert!(err("rfc2136://:53", key()).contains("expected HOST or HOST:PORT"));
        assert!(err("rfc2136://a:1:2", key()).contains("bad port"));
        assert!(err("dns://x", None).contains("expected rfc2136://HOST[:PORT] or exec:"));

        let hook = executable(d, "hook", "exit 0");
        let spec = format!("exec:{}", hook.display());
        assert!(matches!(DnsSolver::parse(&spec, None), Ok(DnsSolver::Exec(p)) if p == hook));
        assert!(err(&spec, key()).contains("--acme-dns-tsig is for rfc2136:// only"));
        assert!(err(&format!("exec:{file}"), None).contains("not executable"));
        assert!(err("exec:/nonexistent/hook", None).contains("cannot use hook: No such file"));
        assert!(err(&format!("exec:{}", d.display()), None).contains("not a file"));
    }

    #[test]
    fn stderr_keeps_its_last_lines() {
        assert_eq!(
            last_lines(b"1\n2\n\n3\n4\n5\n6\n7\n", 5),
            "3 | 4 | 5 | 6 | 7"
        );
        assert_eq!(last_lines(b"", 5), "");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let hook = executable(
            dir.path(),
            "hang",
            &format!("sleep 30 &\necho $! > '{}'\nwait", pid_file.display()),
        );
        let started = std::time::Instant::now();
        let err = run_hook(
            &hook,
            Op::Present,
            "_acme-challenge.foo.bar",
            "v",
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DnsError::HookTimeout { .. }), "{err:?}");
        assert!(
            err.to_string().contains("did not finish within 500ms"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // The sleep it started in the background is gone too (or a zombie).
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            if stat.is_err() || stat.as_deref().is_ok_and(|s| s.contains(") Z ")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
