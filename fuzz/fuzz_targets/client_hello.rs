//! The ClientHello reader of the HTTPS handshake (`tls::accept::sni`, used to
//! refuse an IP address as SNI) never panics, and agrees with rustls.
//!
//! For any bytes `raw` received on the HTTPS port:
//! - `sni(raw)` and `sni_is_ip(raw)` return without panicking;
//! - when rustls' `Acceptor` reads a whole ClientHello from `raw` and finds a
//!   host name in it, `sni(raw)` finds that same name (ASCII case and one
//!   trailing dot aside);
//! - when `sni(raw)` finds a name that is a valid DNS name (not an IP
//!   address) and rustls accepts the hello, rustls finds it too.
#![no_main]

use branchgate::tls::accept::{sni, sni_is_ip};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::ServerName;
use rustls::server::Acceptor;

fuzz_target!(|raw: &[u8]| {
    let ours = sni(raw);
    let is_ip = sni_is_ip(raw);
    let mut acceptor = Acceptor::default();
    let mut rest = raw;
    while !rest.is_empty() {
        if acceptor.read_tls(&mut rest).is_err() {
            return;
        }
    }
    let Ok(Some(accepted)) = acceptor.accept() else {
        return;
    };
    let theirs = accepted.client_hello().server_name().map(str::to_owned);
    match (&theirs, &ours) {
        // rustls drops one trailing dot (`a.foo.bar.` names `a.foo.bar`).
        (Some(t), Some(o)) => assert!(
            t.as_bytes()
                .eq_ignore_ascii_case(o.strip_suffix(b".").unwrap_or(o)),
            "rustls read {t:?}, we read {:?}",
            String::from_utf8_lossy(o)
        ),
        (Some(t), None) => panic!("rustls read {t:?}, we read no SNI"),
        (None, Some(o)) => {
            let valid_dns = std::str::from_utf8(o)
                .ok()
                .and_then(|s| ServerName::try_from(s).ok())
                .is_some_and(|n| matches!(n, ServerName::DnsName(_)));
            assert!(
                !valid_dns || is_ip,
                "we read {:?}, rustls read no SNI",
                String::from_utf8_lossy(o)
            );
        }
        (None, None) => {}
    }
});
