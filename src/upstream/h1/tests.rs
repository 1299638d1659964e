use super::*;

fn parse(bytes: &[u8], method: Method) -> Result<Option<Head>, ParseError> {
    let mut buf = BytesMut::from(bytes);
    parse_head(&mut buf, &method, 64 * 1024)
}

/// The whole body of `framing` from `bytes` fed one byte at a time, or the error.
fn body_by_bytes(framing: Framing, bytes: &[u8]) -> Result<(Vec<u8>, usize), ParseError> {
    let mut decoder = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(d) => out.extend_from_slice(&d),
            Decoded::End => return Ok((out, buf.len() + rest.len())),
            Decoded::More => match rest.split_first() {
                Some((b, r)) => {
                    buf.extend_from_slice(&[*b]);
                    rest = r;
                }
                None => match decoder.eof()? {
                    Decoded::End => return Ok((out, 0)),
                    _ => unreachable!(),
                },
            },
        }
    }
}

#[test]
fn a_head_parses_with_its_framing_and_keep_alive() {
    let head = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
        Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.keep_alive);
    assert_eq!(head.headers.get_all("x-a").iter().count(), 2);

    let cases: &[(&[u8], Method, Framing, bool)] = &[
        (
            b"HTTP/1.1 200 OK\r\n\r\n",
            Method::GET,
            Framing::Close,
            false,
        ),
        (
            b"HTTP/1.1 204 No\r\nContent-Length: 9\r\n\r\n",
            Method::GET,
            Framing::Length(0),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            Method::HEAD,
            Framing::Length(0),
            true,
        ),
        (
            b"HTTP/1.1 304 N\r\n\r\n",
            Method::GET,
            Framing::Length(0),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::GET,
            Framing::Chunked,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            Method::GET,
            Framing::Close,
            false,
        ),
        // Both: chunked wins, and the connection is not reused.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
            Framing::Chunked,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Close\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: x-trace, close\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            false,
        ),
        // `close` wins over `keep-alive`, in one field or two.
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            Method::GET,
            Framing::Length(3),
            false,
        ),
        // A 2xx to CONNECT is a tunnel: no body, and never reused.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            Method::CONNECT,
            Framing::Length(0),
            false,
        ),
    ];
    for (bytes, method, framing, keep_alive) in cases {
        let head = parse(bytes, method.clone()).unwrap().unwrap();
        let text = String::from_utf8_lossy(bytes);
        assert_eq!(head.framing, *framing, "{text}");
        assert_eq!(head.keep_alive, *keep_alive, "{text}");
    }
}

#[test]
fn a_bare_keep_alive_or_close_field_stays_out_of_the_map_and_any_other_stays() {
    let head = parse(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n",
        Method::GET,
    )
    .unwrap()
    .unwrap();
    assert!(head.keep_alive);
    assert_eq!(head.headers.len(), 2, "{:?}", head.headers);
    assert!(head.headers.get(CONNECTION).is_none());
    // What names more (a field to drop, an upgrade) goes in, for the proxy
    // to act on.
    for value in ["x-trace, close", "upgrade", "Keep-Alive, x-trace"] {
        let bytes = format!("HTTP/1.1 200 OK\r\nConnection: {value}\r\nContent-Length: 0\r\n\r\n");
        let head = parse(bytes.as_bytes(), Method::GET).unwrap().unwrap();
        assert_eq!(head.headers[CONNECTION], value, "{value}");
    }
}

#[test]
fn content_length_lists_of_one_number_are_read_as_it() {
    for value in ["3", "3, 3", "3 ,\t3", "003", "18446744073709551613"] {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        let head = parse(head.as_bytes(), Method::GET).unwrap().unwrap();
        let n = value.split(',').next().unwrap().trim().parse().unwrap();
        assert_eq!(head.framing, Framing::Length(n), "{value}");
    }
}

#[test]
fn bad_heads_are_refused_and_partial_ones_wait() {
    assert!(
        parse(b"HTTP/1.1 200 OK\r\nContent-", Method::GET)
            .unwrap()
            .is_none()
    );
    let bad: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3,\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, ,3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\xff\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551614\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"not http\r\n\r\n",
    ];
    for bytes in bad {
        assert!(
            parse(bytes, Method::GET).is_err(),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge.resize(70_000, b'a');
    assert_eq!(
        parse(&huge, Method::GET).unwrap_err(),
        ParseError::TooLarge(64 * 1024)
    );
}

#[test]
fn chunked_bodies_decode_byte_by_byte_and_stop_at_their_end() {
    let (body, rest) = body_by_bytes(
        Framing::Chunked,
        b"5;ext=1\r\nhello\r\n1 \r\n!\r\n0\r\nTrailer: x\r\n\r\nNEXT",
    )
    .unwrap();
    assert_eq!(body, b"hello!");
    assert_eq!(rest, 4, "nothing past the end is taken");
    let (body, _) = body_by_bytes(Framing::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert_eq!(body, b"0123456789");
    let bad: &[&[u8]] = &[
        b"\r\n",
        b"x\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"0\r\n\n",
        b"0\r\nTrailer: x\n\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"1 1\r\nx\r\n0\r\n\r\n",
        b"-1\r\n",
        b"ffffffffffffffffff\r\n",
        b"5\r\nhel",
    ];
    for bytes in bad {
        assert!(
            body_by_bytes(Framing::Chunked, bytes).is_err(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn lengths_and_close_delimited_bodies() {
    assert_eq!(
        body_by_bytes(Framing::Length(3), b"abcdef").unwrap(),
        (b"abc".to_vec(), 3)
    );
    assert!(
        body_by_bytes(Framing::Length(3), b"ab").is_err(),
        "cut short"
    );
    assert_eq!(
        body_by_bytes(Framing::Close, b"abc").unwrap(),
        (b"abc".to_vec(), 0)
    );
    assert_eq!(
        body_by_bytes(Framing::Length(0), b"x").unwrap(),
        (vec![], 1)
    );
}

#[test]
fn request_framing_follows_the_body() {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("7"));
    assert_eq!(
        request_framing(&mut h, false, None),
        RequestFraming::Length(7)
    );
    let mut h = HeaderMap::new();
    assert_eq!(
        request_framing(&mut h, true, Some(0)),
        RequestFraming::Length(0)
    );
    assert!(h.is_empty());
    assert_eq!(
        request_framing(&mut h, false, Some(9)),
        RequestFraming::Length(9)
    );
    assert_eq!(h[CONTENT_LENGTH], "9");
    let mut h = HeaderMap::new();
    assert_eq!(
        request_framing(&mut h, false, None),
        RequestFraming::Chunked
    );
    assert_eq!(h[TRANSFER_ENCODING], "chunked");

    let mut out = Vec::new();
    write_head(&mut out, &Method::POST, "/a?b", &h, &[]);
    assert_eq!(
        out,
        b"POST /a?b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(&chunk_size_line(255)[..], b"FF\r\n");

    // The extra fields (forwarding headers) follow the map's.
    let mut h = HeaderMap::new();
    h.insert(http::header::HOST, HeaderValue::from_static("a.foo.bar"));
    let (name, value) = (
        HeaderName::from_static("x-real-ip"),
        HeaderValue::from_static("10.0.0.7"),
    );
    let mut out = Vec::new();
    write_head(&mut out, &Method::GET, "/", &h, &[(&name, &value)]);
    assert_eq!(
        out,
        b"GET / HTTP/1.1\r\nhost: a.foo.bar\r\nx-real-ip: 10.0.0.7\r\n\r\n"
    );
}

#[test]
fn a_request_body_decoder_refuses_trailers_a_response_one_reads_them() {
    let with_trailer = b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    let mut buf = BytesMut::from(&with_trailer[..]);
    let mut decoder = Decoder::request(Framing::Chunked);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from("hello")))
    );
    assert_eq!(
        decoder.decode(&mut buf),
        Err(ParseError::Chunked("request trailers are refused"))
    );
    let mut buf = BytesMut::from(&with_trailer[..]);
    let mut decoder = Decoder::new(Framing::Chunked);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from("hello")))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
    // Without trailers both end the same way, leaving what follows.
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\nGET"[..]);
    let mut decoder = Decoder::request(Framing::Chunked);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from("hello")))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
    assert_eq!(&buf[..], b"GET");
}
