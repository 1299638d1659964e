//! DNS-01 solvers, black-box: RFC 2136 updates signed with TSIG against a
//! real knotd on loopback (two values at one name, removal of one, wrong
//! keys, names outside the zone, names below the zone's wildcard), and the
//! exec hook called the way lego's exec provider calls it.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use branchgate::acme::dns::{DnsError, DnsSolver, TsigKey};
use support::knot::Knot;

/// Two ACME key authorisation digests (43 base64url characters each).
const V1: &str = "LPJNul-wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ";
const V2: &str = "0yyLH9E0Q3pBJfAFDMu45Qye_38l8ckWzpc3WPn-W2E";

fn solver(knot: &Knot) -> DnsSolver {
    let key = TsigKey::parse(&knot.tsig_spec).unwrap();
    DnsSolver::parse(&knot.dns_spec, Some(key)).unwrap()
}

/// A solver for `knot` signing with `key_name` and `secret` instead.
fn solver_with_key(knot: &Knot, dir: &Path, key_name: &str, secret: &str) -> DnsSolver {
    let file = dir.join("other.key");
    std::fs::write(&file, secret).unwrap();
    let key = TsigKey::parse(&format!("{key_name}:hmac-sha256:{}", file.display())).unwrap();
    DnsSolver::parse(&knot.dns_spec, Some(key)).unwrap()
}

#[tokio::test]
async fn a_name_holds_two_values_and_cleanup_removes_only_one() {
    let Some(knot) = Knot::start("foo.bar").await else {
        return;
    };
    let dns = solver(&knot);
    let name = "_acme-challenge.foo.bar";

    dns.present(name, V1).await.unwrap();
    dns.present(name, V2).await.unwrap();
    let mut both = vec![V1.to_owned(), V2.to_owned()];
    both.sort();
    assert_eq!(knot.txt(name).await, both);

    // Presenting again is harmless (an ACME retry).
    dns.present(name, V1).await.unwrap();
    assert_eq!(knot.txt(name).await, both);

    dns.cleanup(name, V1).await.unwrap();
    assert_eq!(knot.txt(name).await, [V2]);
    dns.cleanup(name, V2).await.unwrap();
    assert!(knot.txt(name).await.is_empty());
    // Removing what is not there is not an error either.
    dns.cleanup(name, V2).await.unwrap();
}

#[tokio::test]
async fn values_longer_than_one_string_and_trailing_dots_work() {
    let Some(knot) = Knot::start("foo.bar").await else {
        return;
    };
    let dns = solver(&knot);
    let long = "x".repeat(300);
    dns.present("_acme-challenge.foo.bar.", &long)
        .await
        .unwrap();
    assert_eq!(knot.txt("_acme-challenge.foo.bar").await, [long.as_str()]);
    dns.cleanup("_acme-challenge.foo.bar.", &long)
        .await
        .unwrap();
    assert!(knot.txt("_acme-challenge.foo.bar").await.is_empty());
}

#[tokio::test]
async fn names_below_the_wildcard_get_their_own_txt_records() {
    let Some(knot) = Knot::start_with_hosts("foo.bar", &["x.foo.bar"]).await else {
        return;
    };
    let dns = solver(&knot);
    for host in ["x.foo.bar", "be1.foo.bar"] {
        assert_eq!(knot.a(host).await, ["127.0.0.1"], "{host} before");
    }

    dns.present("_acme-challenge.x.foo.bar", V1).await.unwrap();
    dns.present("_acme-challenge.be1.foo.bar", V2)
        .await
        .unwrap();
    assert_eq!(knot.txt("_acme-challenge.x.foo.bar").await, [V1]);
    assert_eq!(knot.txt("_acme-challenge.be1.foo.bar").await, [V2]);
    // The wildcard answers no TXT: only the explicit records exist.
    assert!(knot.txt("_acme-challenge.y.foo.bar").await.is_empty());
    // x has its own A record and keeps resolving.
    assert_eq!(knot.a("x.foo.bar").await, ["127.0.0.1"]);
    // be1 only had the wildcard's, which stops at the empty non-terminal
    // be1.foo.bar that the TXT record below it creates (RFC 4592) — the
    // reason Knot::start_with_hosts exists.
    assert!(knot.a("be1.foo.bar").await.is_empty());
    assert_eq!(knot.a("other.foo.bar").await, ["127.0.0.1"]);

    dns.cleanup("_acme-challenge.be1.foo.bar", V2)
        .await
        .unwrap();
    assert_eq!(knot.a("be1.foo.bar").await, ["127.0.0.1"]);
    assert_eq!(knot.txt("_acme-challenge.x.foo.bar").await, [V1]);
}

#[tokio::test]
async fn a_wrong_secret_or_key_name_is_reported_as_a_tsig_error() {
    let Some(knot) = Knot::start("foo.bar").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let name = "_acme-challenge.foo.bar";

    let wrong_secret = solver_with_key(&knot, dir.path(), &knot.key_name, "d3Jvbmcgc2VjcmV0");
    let err = wrong_secret.present(name, V1).await.unwrap_err();
    assert!(matches!(err, DnsError::Refused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("NOTAUTH") && msg.contains("BADSIG"), "{msg}");
    assert!(msg.contains(&knot.addr.to_string()), "{msg}");

    let wrong_name = solver_with_key(&knot, dir.path(), "nobody", &knot.secret);
    let msg = wrong_name.present(name, V1).await.unwrap_err().to_string();
    assert!(msg.contains("BADKEY"), "{msg}");

    assert!(knot.txt(name).await.is_empty());
}

#[tokio::test]
async fn a_name_outside_the_servers_zones_is_a_clear_error() {
    let Some(knot) = Knot::start("foo.bar").await else {
        return;
    };
    let err = solver(&knot)
        .present("_acme-challenge.example.org", V1)
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::NoZone { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no zone found for _acme-challenge.example.org") && msg.contains("REFUSED"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    // A port nothing listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "c2VjcmV0").unwrap();
    let key = TsigKey::parse(&format!("k:hmac-sha256:{}", file.display())).unwrap();
    let dns = DnsSolver::parse(&format!("rfc2136://{addr}"), Some(key)).unwrap();
    let err = dns
        .present("_acme-challenge.foo.bar", V1)
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// Writes an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn the_exec_hook_gets_action_name_with_dot_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let hook = script(
        dir.path(),
        "hook.sh",
        &format!("echo \"$@\" >> '{}'", calls.display()),
    );
    let dns = DnsSolver::parse(&format!("exec:{}", hook.display()), None).unwrap();

    dns.present("_acme-challenge.foo.bar", V1).await.unwrap();
    dns.cleanup("_acme-challenge.foo.bar", V1).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        format!("present _acme-challenge.foo.bar. {V1}\ncleanup _acme-challenge.foo.bar. {V1}\n")
    );
}

#[tokio::test]
async fn a_failing_hook_reports_its_status_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let hook = script(
        dir.path(),
        "fail.sh",
        "echo noise >&2\necho 'no such zone' >&2\necho boom >&2\nexit 3",
    );
    let dns = DnsSolver::parse(&format!("exec:{}", hook.display()), None).unwrap();
    let err = dns
        .present("_acme-challenge.foo.bar", V1)
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::HookFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("exit status 3"), "{msg}");
    assert!(msg.contains("noise | no such zone | boom"), "{msg}");
    assert!(
        msg.contains("fail.sh present _acme-challenge.foo.bar."),
        "{msg}"
    );
}
