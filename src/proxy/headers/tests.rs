use super::*;

fn conn() -> ConnInfo {
    ConnInfo::new(
        "[::ffff:10.0.0.7]:5555".parse().unwrap(),
        HeaderValue::from(8080u16),
        Scheme::Http,
    )
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut h = HeaderMap::new();
    h.insert(CONNECTION, "close, X-Secret".parse().unwrap());
    h.insert("x-secret", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert(TE, "trailers".parse().unwrap());
    h.insert("x-kept", "1".parse().unwrap());
    prepare_response(&mut h, false);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
}

#[test]
fn forwarded_headers_untrusted_overwrite() {
    let mut h = HeaderMap::new();
    h.insert(&X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
    h.insert(&X_FORWARDED_PROTO, "https".parse().unwrap());
    h.insert("proxy", "http://evil".parse().unwrap());
    h.insert(FORWARDED, "for=6.6.6.6;proto=https".parse().unwrap());
    h.insert(HOST, "b.foo.bar".parse().unwrap());
    let host = HeaderValue::from_static("a.foo.bar");
    h.insert(&X_REAL_IP, "6.6.6.6".parse().unwrap());
    h.append(&X_FORWARDED_HOST, "evil.example".parse().unwrap());
    h.append(&X_FORWARDED_HOST, "evil2.example".parse().unwrap());
    h.insert(&X_ORIGINAL_URI, "/admin".parse().unwrap());
    let f = prepare_request(
        &mut h,
        &conn(),
        &host,
        HeaderValue::from_static("/x?y"),
        HeaderRules {
            trust: false,
            underscores: false,
        },
        true,
        None,
    )
    .forwarding;
    assert_eq!(
        f.fields().map(|(n, v)| (n.as_str(), v.to_str().unwrap())),
        [
            ("x-real-ip", "10.0.0.7"),
            ("x-forwarded-for", "10.0.0.7"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "a.foo.bar"),
            ("x-forwarded-port", "8080"),
            ("x-forwarded-ssl", "off"),
            ("x-original-uri", "/x?y"),
        ]
    );
    for name in FORWARDING {
        assert!(!h.contains_key(name), "the client's {name} is gone");
    }
    assert_eq!(h[HOST], "a.foo.bar");
    assert!(!h.contains_key("proxy"));
    assert!(!h.contains_key(FORWARDED));
    assert_eq!(h[HOST], "a.foo.bar", "the routed host replaces Host");
}

#[test]
fn upgrades_keep_their_headers_only_on_http11() {
    let host = HeaderValue::from_static("a.foo.bar");
    // The headers after `prepare_request`, and whether it forwards the upgrade.
    let prepared = |upgradable: bool| {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        let rules = HeaderRules {
            trust: false,
            underscores: false,
        };
        let p = prepare_request(
            &mut h,
            &conn(),
            &host,
            HeaderValue::from_static("/"),
            rules,
            upgradable,
            None,
        );
        (h, p.upgrade)
    };
    let (h, upgrade) = prepared(true);
    assert!(upgrade);
    assert_eq!(h[UPGRADE], "websocket");
    assert_eq!(h[CONNECTION], "upgrade");
    assert!(!h.contains_key("keep-alive"));
    let (h, upgrade) = prepared(false);
    assert!(!upgrade);
    assert!(!h.contains_key(UPGRADE) && !h.contains_key(CONNECTION));
}

#[test]
fn underscores_and_untrusted_forwarding_headers_go_unless_allowed() {
    let fresh = || {
        let mut h = HeaderMap::new();
        for name in ["x_forwarded_for", "x_real_ip", "transfer_encoding"] {
            h.insert(HeaderName::from_static(name), "6.6.6.6".parse().unwrap());
        }
        for name in UNTRUSTED {
            h.insert(name, "6.6.6.6".parse().unwrap());
        }
        h.insert("x-kept", "1".parse().unwrap());
        h
    };
    let host = HeaderValue::from_static("a.foo.bar");
    let uri = || HeaderValue::from_static("/");
    for (trust, underscores) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut h = fresh();
        prepare_request(
            &mut h,
            &conn(),
            &host,
            uri(),
            HeaderRules { trust, underscores },
            true,
            None,
        );
        assert!(h.contains_key("x-kept"));
        assert_eq!(h.contains_key("x_forwarded_for"), underscores);
        assert_eq!(h.contains_key("transfer_encoding"), underscores);
        for name in UNTRUSTED {
            assert_eq!(h.contains_key(name), trust, "{name} with trust={trust}");
        }
    }
}

#[test]
fn known_names_map_to_their_bits() {
    for (i, name) in DROPPED.iter().chain(&UNTRUSTED).enumerate() {
        assert_eq!(known_bit(name.as_str()), 1 << i, "{name}");
    }
    assert_eq!(known_bit("content-length"), CONTENT_LENGTH_BIT);
    for (i, name) in FORWARDING.iter().enumerate() {
        assert_eq!(
            known_bit(name.as_str()),
            1 << (FORWARDING_SHIFT as usize + i),
            "{name}"
        );
    }
    assert_eq!(known_bit("x-forwarded-for"), XFF_BIT);
    assert_eq!(known_bit("x-forwarded-proto"), XF_PROTO_BIT);
    assert_eq!(known_bit("x-forwarded-host"), XF_HOST_BIT);
    assert_eq!(known_bit("x-forwarded-port"), XF_PORT_BIT);
    for other in [
        "host",
        "x-forwarded-fox",
        "x-real-ipv",
        "cookie",
        "proxy-authorization",
        "",
    ] {
        assert_eq!(known_bit(other), 0, "{other}");
    }
}

#[test]
fn chunked_responses_lose_their_content_length() {
    let mut h = HeaderMap::new();
    h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
    h.insert(CONTENT_LENGTH, "2".parse().unwrap());
    prepare_response(&mut h, false);
    assert!(h.is_empty(), "{h:?}");
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, "2".parse().unwrap());
    prepare_response(&mut h, false);
    assert_eq!(h[CONTENT_LENGTH], "2");
}

#[test]
fn content_length_is_made_canonical() {
    for (sent, exact, forwarded) in [
        ("007", Some(7), "7"),
        ("5, 5", Some(5), "5"),
        ("0", Some(0), "0"),
        ("12", Some(12), "12"),
        ("00", Some(0), "0"),
    ] {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, sent.parse().unwrap());
        canonical_content_length(&mut h, exact);
        assert_eq!(h[CONTENT_LENGTH], forwarded, "{sent}");
    }
}

#[test]
fn forwarded_headers_trusted_append() {
    let mut h = HeaderMap::new();
    h.append(&X_FORWARDED_FOR, "9.9.9.9".parse().unwrap());
    h.append(&X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
    h.insert(FORWARDED, "for=9.9.9.9".parse().unwrap());
    h.insert(&X_FORWARDED_PROTO, "https".parse().unwrap());
    h.insert(&X_FORWARDED_PORT, "443".parse().unwrap());
    h.insert(&X_REAL_IP, "9.9.9.9".parse().unwrap());
    h.insert(&X_FORWARDED_SSL, "off".parse().unwrap());
    let host = HeaderValue::from_static("a.foo.bar");
    let f = prepare_request(
        &mut h,
        &conn(),
        &host,
        HeaderValue::from_static("/"),
        HeaderRules {
            trust: true,
            underscores: false,
        },
        true,
        None,
    )
    .forwarding;
    assert_eq!(
        f.get(&X_FORWARDED_FOR).unwrap(),
        "9.9.9.9, 1.2.3.4, 10.0.0.7"
    );
    assert!(h.contains_key(FORWARDED), "kept when trusted");
    assert_eq!(f.get(&X_FORWARDED_PROTO).unwrap(), "https");
    assert_eq!(
        f.get(&X_FORWARDED_SSL).unwrap(),
        "on",
        "follows the proto kept"
    );
    assert_eq!(f.get(&X_FORWARDED_PORT).unwrap(), "443");
    assert_eq!(
        f.get(&X_FORWARDED_HOST).unwrap(),
        "a.foo.bar",
        "none was sent"
    );
    assert_eq!(
        f.get(&X_REAL_IP).unwrap(),
        "10.0.0.7",
        "always the client's"
    );
    for name in FORWARDING {
        assert!(!h.contains_key(name), "{name} goes once, after the map");
    }
    assert!(f.get(&HOST).is_none());
}
