use super::*;

fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, RequestError> {
    let mut buf = BytesMut::from(bytes);
    parse_request(&mut buf, 64 * 1024)
}

fn head(bytes: &str) -> RequestHead {
    parse(bytes.as_bytes())
        .unwrap_or_else(|e| panic!("{bytes:?}: {e}"))
        .unwrap_or_else(|| panic!("{bytes:?}: incomplete"))
}

fn refused(bytes: &str) -> RequestError {
    match parse(bytes.as_bytes()) {
        Err(e) => e,
        Ok(h) => panic!("{bytes:?} was accepted: {h:?}"),
    }
}

#[test]
fn a_head_parses_with_its_fields_in_order_and_leaves_the_rest() {
    let mut buf = BytesMut::from(
        &b"\r\nPOST /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabcGET"[..],
    );
    let h = parse_request(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(h.method, Method::POST);
    assert_eq!(h.uri, "/a?b=c");
    assert_eq!(h.version, Version::HTTP_11);
    assert_eq!(h.headers["host"], "x");
    let a: Vec<_> = h.headers.get_all("x-a").iter().collect();
    assert_eq!(a, ["1", "2"]);
    assert_eq!(h.framing, Framing::Length(3));
    assert!(h.keep_alive && !h.expect_continue && !h.upgrade);
    // The body and what follows stay in the buffer.
    assert_eq!(&buf[..], b"abcGET");
}

#[test]
fn an_incomplete_head_asks_for_more_until_the_limit() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
    assert!(parse_request(&mut buf, 1024).unwrap().is_none());
    assert_eq!(buf.len(), 25, "nothing taken from an incomplete head");
    assert_eq!(
        parse_request(&mut buf, 25).unwrap_err(),
        RequestError::TooLarge(25)
    );
    // A complete head longer than the limit is refused too.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    assert_eq!(
        parse_request(&mut buf, 20).unwrap_err(),
        RequestError::TooLarge(20)
    );
}

#[test]
fn refusals_carry_the_status_a_client_gets() {
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let e = refused(&format!("GET / HTTP/1.1\r\n{many}\r\n"));
    assert_eq!(e, RequestError::TooManyFields);
    assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let fits: String = (0..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(
        head(&format!("GET / HTTP/1.1\r\n{fits}\r\n")).headers.len(),
        MAX_HEADERS
    );

    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
    let mut buf = BytesMut::from(long.as_bytes());
    let e = parse_request(&mut buf, 128 * 1024).unwrap_err();
    assert_eq!(e, RequestError::TargetTooLong);
    assert_eq!(e.status(), StatusCode::URI_TOO_LONG);

    assert_eq!(refused("G@T / HTTP/1.1\r\n\r\n"), RequestError::Method);
    assert_eq!(
        refused("GET /a\x7fb HTTP/1.1\r\n\r\n"),
        RequestError::Target
    );
    assert_eq!(
        refused("GET http://[x/ HTTP/1.1\r\n\r\n"),
        RequestError::Target
    );
    assert_eq!(
        refused("GET / HTTP/2.0\r\n\r\n"),
        RequestError::Head(httparse::Error::Version)
    );
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        RequestError::Head(httparse::Error::HeaderName)
    );
    // Obs-fold (a continuation line) is not taken.
    assert!(matches!(
        refused("GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n"),
        RequestError::Head(_)
    ));
    // Control bytes in a value (DEL, NUL) are refused.
    for value in ["a\x7fb", "a\0b", "a\x01"] {
        let e = refused(&format!("GET / HTTP/1.1\r\nX-A: {value}\r\n\r\n"));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{value:?}");
    }
    // Bytes beyond ASCII (obs-text) are kept as they came.
    let h = head("GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n");
    assert_eq!(h.headers["x-a"].as_bytes(), "caf\u{e9}".as_bytes());
}

#[test]
fn content_length_is_one_number_of_digits_only() {
    assert_eq!(
        head("PUT / HTTP/1.1\r\nContent-Length: 0042\r\n\r\n").framing,
        Framing::Length(42)
    );
    // The same number twice: one field kept.
    let h = head("PUT / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(5));
    assert_eq!(h.headers.get_all(CONTENT_LENGTH).iter().count(), 1);
    for bad in [
        "5\r\nContent-Length: 6",
        "5, 5",
        "+5",
        "-1",
        " 5 x",
        "0x5",
        "5 5",
        "18446744073709551615",
        "99999999999999999999",
    ] {
        let e = refused(&format!("PUT / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n"));
        assert_eq!(e, RequestError::ContentLength, "{bad:?}");
    }
    // An empty value is refused too (httparse gives it as empty).
    assert_eq!(
        refused("PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n"),
        RequestError::ContentLength
    );
}

#[test]
fn transfer_encoding_frames_when_its_last_coding_is_chunked() {
    for te in [
        "chunked",
        "CHUNKED",
        "gzip, chunked",
        "gzip,chunked\t",
        "gzip\r\nTransfer-Encoding: chunked",
    ] {
        let h = head(&format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n"
        ));
        assert_eq!(h.framing, Framing::Chunked, "{te:?}");
        assert!(h.keep_alive, "{te:?}");
    }
    for te in [
        "gzip",
        "chunked, gzip",
        "chunked,",
        "chunked\r\nTransfer-Encoding: gzip",
        "chunked-x",
        "x\u{e9}, chunked",
        "",
    ] {
        let e = refused(&format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n"
        ));
        assert_eq!(e, RequestError::TransferEncoding, "{te:?}");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        RequestError::TransferEncoding10
    );
}

#[test]
fn with_both_framings_chunked_wins_the_length_goes_and_the_connection_closes() {
    for order in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Length: 5",
    ] {
        let h = head(&format!("POST / HTTP/1.1\r\n{order}\r\n\r\n"));
        assert_eq!(h.framing, Framing::Chunked, "{order}");
        assert!(!h.headers.contains_key(CONTENT_LENGTH), "{order}");
        assert!(!h.keep_alive, "{order}");
    }
    // Differing lengths are refused whatever else came.
    assert_eq!(
        refused(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        ),
        RequestError::ContentLength
    );
}

#[test]
fn the_connection_is_kept_by_the_versions_default_unless_told() {
    let cases = [
        ("GET / HTTP/1.1\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            false,
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.1\r\nConnection: x-close\r\n\r\n", true),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            "GET / HTTP/1.0\r\nConnection: foo,  Keep-Alive \r\n\r\n",
            true,
        ),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        ),
        // Not text: not read as keep-alive.
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive, \u{e9}\r\n\r\n",
            false,
        ),
    ];
    for (bytes, keep) in cases {
        assert_eq!(head(bytes).keep_alive, keep, "{bytes:?}");
    }
}

#[test]
fn a_bare_keep_alive_or_close_field_stays_out_of_the_map_and_any_other_stays() {
    let h = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-A: 1\r\n\r\n");
    assert!(!h.keep_alive);
    assert_eq!(h.headers.len(), 2, "{:?}", h.headers);
    assert!(h.headers.get(CONNECTION).is_none());
    let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive && h.headers.is_empty());
    // What names more (a field to drop, an upgrade) goes in, for the proxy
    // to act on.
    for value in ["upgrade", "close, x-trace", "keep-alive , x"] {
        let h = head(&format!("GET / HTTP/1.1\r\nConnection: {value}\r\n\r\n"));
        assert_eq!(h.headers[CONNECTION], value, "{value}");
    }
}

#[test]
fn expect_and_upgrade_are_noted() {
    assert!(
        head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expect_continue
    );
    assert!(!head("PUT / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n").expect_continue);
    assert!(!head("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nExpect: x\r\n\r\n").expect_continue);
    assert!(head("GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
    assert!(!head("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
    let connect = head("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert!(connect.upgrade);
    assert_eq!(connect.uri.authority().unwrap(), "example.com:443");
    assert_eq!(head("OPTIONS * HTTP/1.1\r\n\r\n").uri, "*");
    assert_eq!(
        head("GET http://a.example/x HTTP/1.1\r\n\r\n").uri.host(),
        Some("a.example")
    );
}

fn answer(
    method: &Method,
    version: Version,
    keep_alive: bool,
    status: u16,
    fields: &[(&str, &str)],
    body: BodySize,
) -> (String, Written) {
    let mut headers = HeaderMap::new();
    for (n, v) in fields {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let asked = Asked {
        method,
        version,
        keep_alive,
    };
    let mut dst = Vec::new();
    let status = StatusCode::from_u16(status).unwrap();
    let written = write_response_head(&mut dst, asked, status, &headers, body, b"D");
    (String::from_utf8(dst).unwrap(), written)
}

fn written(framing: Framing, keep_alive: bool) -> Written {
    Written {
        framing,
        keep_alive,
    }
}

#[test]
fn a_response_head_is_written_with_its_framing_decided_here() {
    let get = &Method::GET;
    let v11 = Version::HTTP_11;
    // The map's framing fields are not written: the body's size decides.
    let (head, w) = answer(
        get,
        v11,
        true,
        200,
        &[
            ("x-a", "1"),
            ("content-length", "99"),
            ("transfer-encoding", "gzip"),
            ("x-a", "2"),
        ],
        BodySize::Exact(5),
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\ndate: D\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(w, written(Framing::Length(5), true));

    let (head, w) = answer(get, v11, true, 404, &[("date", "X")], BodySize::Unknown);
    assert_eq!(
        head,
        "HTTP/1.1 404 Not Found\r\ndate: X\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(w.framing, Framing::Chunked);

    let (head, w) = answer(get, v11, true, 200, &[], BodySize::Empty);
    assert!(head.ends_with("content-length: 0\r\n\r\n"), "{head}");
    assert_eq!(w.framing, Framing::Length(0));

    // An unknown status code gets no reason phrase.
    let (head, _) = answer(get, v11, true, 599, &[], BodySize::Empty);
    assert!(head.starts_with("HTTP/1.1 599 \r\n"), "{head}");
}

#[test]
fn responses_without_a_body_get_no_framing_but_a_heads_keeps_its_length() {
    let v11 = Version::HTTP_11;
    for status in [204, 304, 100] {
        let (head, w) = answer(
            &Method::GET,
            v11,
            true,
            status,
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            BodySize::Exact(5),
        );
        assert!(
            !head.contains("content-length") && !head.contains("transfer-encoding"),
            "{head}"
        );
        assert_eq!(w, written(Framing::Length(0), true), "{status}");
    }
    let (head, w) = answer(
        &Method::HEAD,
        v11,
        true,
        200,
        &[("content-length", "1234"), ("transfer-encoding", "chunked")],
        BodySize::Empty,
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ndate: D\r\n\r\n"
    );
    assert_eq!(w, written(Framing::Length(0), true));
    let (head, w) = answer(&Method::HEAD, v11, true, 200, &[], BodySize::Unknown);
    assert_eq!(head, "HTTP/1.1 200 OK\r\ndate: D\r\n\r\n");
    assert_eq!(w.framing, Framing::Length(0));
}

#[test]
fn the_connection_is_kept_only_when_everything_lets_it() {
    let get = &Method::GET;
    let (v10, v11) = (Version::HTTP_10, Version::HTTP_11);
    let cases = [
        // (version, request keeps, map's Connection, body, kept, written)
        (v11, true, None, BodySize::Exact(1), true, None),
        (v11, false, None, BodySize::Exact(1), false, Some("close")),
        (
            v11,
            true,
            Some("close"),
            BodySize::Exact(1),
            false,
            Some("close"),
        ),
        (
            v11,
            true,
            Some("keep-alive"),
            BodySize::Exact(1),
            true,
            None,
        ),
        (
            v10,
            true,
            None,
            BodySize::Exact(1),
            true,
            Some("keep-alive"),
        ),
        (v10, false, None, BodySize::Exact(1), false, None),
        // HTTP/1.0 gets no chunked body: it ends with the connection.
        (v10, true, None, BodySize::Unknown, false, None),
        (v11, true, None, BodySize::Unknown, true, None),
    ];
    for (version, keeps, connection, body, kept, written) in cases {
        let fields: Vec<(&str, &str)> = connection.map(|c| ("connection", c)).into_iter().collect();
        let (head, w) = answer(get, version, keeps, 200, &fields, body);
        let case = format!("{version:?} {keeps} {connection:?} {body:?}: {head}");
        assert_eq!(w.keep_alive, kept, "{case}");
        let lines: Vec<&str> = head
            .lines()
            .filter(|l| l.starts_with("connection"))
            .collect();
        match written {
            Some(v) => assert_eq!(lines, [format!("connection: {v}")], "{case}"),
            None => assert!(lines.is_empty(), "{case}"),
        }
        if version == v10 && body == BodySize::Unknown {
            assert_eq!(w.framing, Framing::Close, "{case}");
            assert!(!head.contains("transfer-encoding"), "{case}");
        }
    }
}

#[test]
fn switching_protocols_and_tunnels_hand_the_connection_over() {
    let (head, w) = answer(
        &Method::GET,
        Version::HTTP_11,
        true,
        101,
        &[("connection", "upgrade"), ("upgrade", "websocket")],
        BodySize::Empty,
    );
    assert_eq!(
        head,
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\ndate: D\r\n\r\n"
    );
    assert_eq!(w, written(Framing::Length(0), false));
    let (head, w) = answer(
        &Method::CONNECT,
        Version::HTTP_11,
        true,
        200,
        &[],
        BodySize::Unknown,
    );
    assert_eq!(head, "HTTP/1.1 200 OK\r\ndate: D\r\n\r\n");
    assert_eq!(w, written(Framing::Length(0), false));
    // A refused CONNECT is an ordinary response.
    let (head, w) = answer(
        &Method::CONNECT,
        Version::HTTP_11,
        true,
        403,
        &[],
        BodySize::Exact(2),
    );
    assert!(head.ends_with("content-length: 2\r\n\r\n"), "{head}");
    assert!(w.keep_alive);
}
