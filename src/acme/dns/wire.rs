//! DNS messages for the RFC 2136 client ([`super::rfc2136`]): the SOA query
//! and the UPDATE written uncompressed, and answers read (compression
//! pointers followed) for what the client needs — id, flags, RCODE, the
//! zone's SOA owner and the TSIG record, which [`super::tsig`] verifies.

use super::Op;

/// TTL of a published TXT record: it lives for minutes, and a resolver that
/// cached an earlier value must not keep it long.
const TXT_TTL: u32 = 60;

pub(super) const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
pub(super) const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
pub(super) const CLASS_ANY: u16 = 255;
pub(super) const OPCODE_QUERY: u16 = 0;
pub(super) const OPCODE_UPDATE: u16 = 5;

pub(super) fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

pub(super) fn put_u48(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes()[2..]);
}

/// Writes `name` (dotted, no trailing dot; "" is the root) uncompressed.
pub(super) fn put_name(buf: &mut Vec<u8>, name: &str) -> Result<(), &'static str> {
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
pub(super) fn query_message(id: u16, name: &str, rtype: u16) -> Result<Vec<u8>, &'static str> {
    let mut msg = Vec::with_capacity(64);
    header(&mut msg, id, OPCODE_QUERY << 11, [1, 0, 0, 0]);
    put_name(&mut msg, name)?;
    put_u16(&mut msg, rtype);
    put_u16(&mut msg, CLASS_IN);
    Ok(msg)
}

/// An UPDATE of `zone` adding (RFC 2136 §2.5.1) or deleting the one RR
/// (§2.5.4) `name TXT "value"`, without prerequisites.
pub(super) fn update_message(
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
pub(super) struct Reply {
    pub(super) id: u16,
    pub(super) flags: u16,
    pub(super) rcode: u16,
    /// The owner of the first SOA in the answer or authority section.
    pub(super) soa: Option<String>,
    pub(super) tsig: Option<TsigRecord>,
}

/// A TSIG RR read from an answer.
#[derive(Debug)]
pub(super) struct TsigRecord {
    /// Where the RR starts: everything before it is signed.
    pub(super) start: usize,
    pub(super) key: String,
    pub(super) algorithm: String,
    pub(super) time: u64,
    pub(super) fudge: u16,
    pub(super) mac: Vec<u8>,
    pub(super) original_id: u16,
    pub(super) error: u16,
    pub(super) other: Vec<u8>,
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

pub(super) fn parse_reply(msg: &[u8]) -> Result<Reply, &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
