//! nginx-proxy's per-host Basic auth (issue 16): `--htpasswd DIR` with
//! `<host>` and `<host>_<sha1(path)>` files, the realm and 401 as
//! nginx-proxy's, hot reload, bad lines skipped with a warning naming the
//! file and line; and credentials from a label (`auth_basic` in the routes
//! file, the same parser as `branchgate.auth.basic`).

mod support;

use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use support::proxy::{route_toml, write_atomically};
use support::{Backend, ProxyProcess, get, get_with};

/// `{SHA}` of "secret".
const SECRET: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

fn sha1_hex(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn files_per_host_and_path_with_nginx_proxys_realm_and_hot_reload() {
    let up = Backend::spawn("up").await;
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("app.foo.bar");
    std::fs::write(&host_file, format!("ann:{SECRET}\n")).unwrap();
    let path_file = dir
        .path()
        .join(format!("app.foo.bar_{}", sha1_hex("/admin")));
    std::fs::write(&path_file, format!("bob:{SECRET}\n")).unwrap();
    let mixed = dir.path().join("mixed.foo.bar");
    std::fs::write(
        &mixed,
        format!("# team\nno colon here\neve:$6$salt$abcdefghijk\nann:{SECRET}\n"),
    )
    .unwrap();
    // A file that is there but cannot be read refuses everyone (nginx answers 500).
    std::os::unix::fs::symlink(
        dir.path().join("missing"),
        dir.path().join("dangling.foo.bar"),
    )
    .unwrap();
    let routes = [
        route_toml("dangling.foo.bar", &[up.addr], ""),
        route_toml("app.foo.bar", &[up.addr], ""),
        route_toml("app.foo.bar", &[up.addr], "path = \"/admin\""),
        route_toml("mixed.foo.bar", &[up.addr], ""),
        route_toml("open.foo.bar", &[up.addr], ""),
        route_toml(
            "label.foo.bar",
            &[up.addr],
            &format!("auth_basic = \"ann:{SECRET}\""),
        ),
    ]
    .concat();
    let p = ProxyProcess::spawn(&routes, &["--htpasswd", dir.path().to_str().unwrap()]).await;
    let a = p.addr;
    let ann = basic("ann", "secret");
    let bob = basic("bob", "secret");

    let r = get(a, "app.foo.bar", "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        "Basic realm=\"Restricted app.foo.bar\""
    );
    assert!(String::from_utf8_lossy(&r.body).contains("401 Authorization Required"));
    let r = get_with(a, "app.foo.bar", "/x", &[("authorization", &ann)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.seen_header("authorization"),
        Some(ann.clone()),
        "forwarded, as nginx does"
    );
    assert_eq!(
        get_with(
            a,
            "app.foo.bar",
            "/x",
            &[("authorization", &basic("ann", "no"))]
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // The path's own file wins over the host's.
    let r = get_with(a, "app.foo.bar", "/admin/users", &[("authorization", &ann)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        "Basic realm=\"Restricted app.foo.bar//admin\""
    );
    let r = get_with(a, "app.foo.bar", "/admin/users", &[("authorization", &bob)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        get(a, "dangling.foo.bar", "/").await.status,
        StatusCode::UNAUTHORIZED
    );
    // No file: open.
    assert_eq!(get(a, "open.foo.bar", "/").await.status, StatusCode::OK);
    // Credentials from the label.
    let r = get(a, "label.foo.bar", "/").await;
    assert_eq!(
        r.headers["www-authenticate"],
        "Basic realm=\"Restricted label.foo.bar\""
    );
    let r = get_with(a, "label.foo.bar", "/", &[("authorization", &ann)]).await;
    assert_eq!(r.status, StatusCode::OK);

    // Bad lines skipped with a warning naming file and line; ann still works.
    let r = get_with(a, "mixed.foo.bar", "/", &[("authorization", &ann)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let warnings: Vec<serde_json::Value> = p
        .stderr()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["fields"]["message"] == "htpasswd line skipped")
        .collect();
    let mixed_name = mixed.display().to_string();
    let lines: Vec<u64> = warnings
        .iter()
        .filter(|w| w["fields"]["file"] == mixed_name.as_str())
        .map(|w| w["fields"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3], "{warnings:?} {:#?}", p.stderr());
    assert!(
        warnings
            .iter()
            .all(|w| !w.to_string().contains("abcdefghijk")),
        "no hash in logs"
    );

    // Hot reload: a user added, then the file removed. (Waiting on the log
    // line, not by polling with carl's credentials: every refusal counts
    // towards the failed-login throttle.)
    write_atomically(&host_file, &format!("ann:{SECRET}\ncarl:{SECRET}\n"));
    let host_name = host_file.display().to_string();
    support::eventually(Duration::from_secs(10), "the file to be read again", || {
        let reloaded = p.stderr().iter().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["fields"]["message"] == "htpasswd file loaded"
                && v["fields"]["file"] == host_name.as_str()
                && v["fields"]["users"] == 2
        });
        async move { reloaded.then_some(()) }
    })
    .await;
    let r = get_with(
        a,
        "app.foo.bar",
        "/",
        &[("authorization", &basic("carl", "secret"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    std::fs::remove_file(&host_file).unwrap();
    support::eventually(Duration::from_secs(10), "the host to open", || async move {
        (get(a, "app.foo.bar", "/").await.status == StatusCode::OK).then_some(())
    })
    .await;
}
