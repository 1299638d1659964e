//! Docker discovery against a real engine: the proxy binary runs on the host
//! with `--docker`, test containers (the FROM-scratch echo image) are started,
//! stopped, re-networked and health-flipped with the docker CLI, and every
//! answer is checked through the proxy.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::docker::{self, TestNetwork, engine, field};
use support::{ProxyProcess, eventually, get};

const LIMIT: Duration = Duration::from_secs(15);

async fn proxy(url: &str) -> ProxyProcess {
    ProxyProcess::spawn("", &["--docker", url]).await
}

/// [`support::until_status`] with this file's limit.
async fn until_status(p: &ProxyProcess, host: &str, path: &str, status: u16) -> Vec<u8> {
    support::until_status(p, host, path, status, LIMIT).await
}

fn host(hint: &str) -> String {
    format!("{}.test", docker::unique(hint))
}

#[tokio::test]
async fn every_container_setting_routes_as_nginx_proxy_does() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;

    let (list_a, list_b) = (host("list-a"), host("list-b"));
    let list = engine.run(
        "list",
        &["-e", &format!("VIRTUAL_HOST= {list_a} ,, {list_b} ,")],
    );
    let single = host("single");
    let exposed = engine.run(
        "single",
        &[
            "--expose",
            "8081",
            "-e",
            "ECHO_PORTS=8081",
            "-e",
            &format!("VIRTUAL_HOST={single}"),
        ],
    );
    let (port_host, many_host) = (host("port"), host("many"));
    let port = engine.run(
        "port",
        &[
            "--expose",
            "8081",
            "--expose",
            "8082",
            "-e",
            "ECHO_PORTS=80,8081,8082",
            "-e",
            &format!("VIRTUAL_HOST={port_host}"),
            "-e",
            "VIRTUAL_PORT=8082",
        ],
    );
    let many = engine.run(
        "many",
        &[
            "--expose",
            "8081",
            "--expose",
            "8082",
            "-e",
            "ECHO_PORTS=80,8081,8082",
            "-e",
            &format!("VIRTUAL_HOST={many_host}"),
        ],
    );
    let zone = docker::unique("zone");
    let wild = engine.run(
        "wild",
        &[
            "-e",
            &format!("VIRTUAL_HOST=*.w.{zone}.test, ~^r-[0-9]+\\.{zone}\\.test$"),
        ],
    );
    let path_host = host("path");
    let path = engine.run(
        "path",
        &[
            "-e",
            &format!("VIRTUAL_HOST={path_host}"),
            "-e",
            "VIRTUAL_PATH=/app/",
            "-e",
            "VIRTUAL_DEST=/",
        ],
    );
    let label_host = host("label");
    let labelled = engine.run(
        "label",
        &[
            "-e",
            "VIRTUAL_HOST=env-loses.test",
            "-e",
            "VIRTUAL_PORT=80",
            "-e",
            "ECHO_PORTS=80,8083",
            "--label",
            &format!("branchgate.host={label_host}"),
            "--label",
            "branchgate.port=8083",
            "--label",
            "branchgate.path=/v2/",
            "--label",
            "branchgate.dest=/api/",
        ],
    );
    let tls_host = host("tls");
    let _tls = engine.run(
        "tls",
        &[
            "-e",
            &format!("VIRTUAL_HOST={tls_host}"),
            "-e",
            "VIRTUAL_PROTO=https",
        ],
    );

    // Multiple hosts, entries trimmed, empty ones ignored; no port anywhere: 80.
    for h in [&list_a, &list_b] {
        let body = until_status(&p, h, "/x", 200).await;
        assert_eq!(field(&body, "name"), list.name);
        assert_eq!(field(&body, "port"), "80");
    }
    // One exposed port is the port.
    let body = until_status(&p, &single, "/", 200).await;
    assert_eq!(
        (field(&body, "name"), field(&body, "port")),
        (exposed.name.clone(), "8081".into())
    );
    // VIRTUAL_PORT beats exposed ports; several exposed and none chosen: 80.
    let body = until_status(&p, &port_host, "/", 200).await;
    assert_eq!(
        (field(&body, "name"), field(&body, "port")),
        (port.name.clone(), "8082".into())
    );
    let body = until_status(&p, &many_host, "/", 200).await;
    assert_eq!(
        (field(&body, "name"), field(&body, "port")),
        (many.name.clone(), "80".into())
    );
    // Wildcard and regex hosts.
    for h in [format!("deep.a.w.{zone}.test"), format!("r-42.{zone}.test")] {
        let body = until_status(&p, &h, "/", 200).await;
        assert_eq!(field(&body, "name"), wild.name);
    }
    assert_eq!(
        get(p.addr, &format!("r-x.{zone}.test"), "/").await.status,
        503
    );
    // Path + dest: /app/x reaches the container as /x; other paths are not its.
    let body = until_status(&p, &path_host, "/app/x?q=1", 200).await;
    assert_eq!(
        (field(&body, "name"), field(&body, "path")),
        (path.name.clone(), "/x?q=1".into())
    );
    assert_eq!(get(p.addr, &path_host, "/other").await.status, 404);
    // Labels win over env for every setting.
    let body = until_status(&p, &label_host, "/v2/users", 200).await;
    assert_eq!(field(&body, "name"), labelled.name);
    assert_eq!(
        (field(&body, "port"), field(&body, "path")),
        ("8083".into(), "/api/users".into())
    );
    assert_eq!(get(p.addr, "env-loses.test", "/").await.status, 503);
    // VIRTUAL_PROTO=https: the proxy speaks TLS to a plain-HTTP container, which fails.
    until_status(&p, &tls_host, "/", 502).await;
}

#[tokio::test]
async fn containers_come_and_go_with_start_and_stop() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;
    let h = host("life");
    assert_eq!(get(p.addr, &h, "/").await.status, 503);

    let c = engine.run("life", &["-e", &format!("VIRTUAL_HOST={h}")]);
    let body = until_status(&p, &h, "/", 200).await;
    assert_eq!(field(&body, "name"), c.name);

    c.stop();
    until_status(&p, &h, "/", 503).await;
    c.start();
    until_status(&p, &h, "/", 200).await;

    // Paused: out of its pool; unpaused: back.
    c.cli("pause", &[]);
    until_status(&p, &h, "/", 503).await;
    c.cli("unpause", &[]);
    until_status(&p, &h, "/", 200).await;

    drop(c);
    until_status(&p, &h, "/", 503).await;
}

#[tokio::test]
async fn containers_on_one_host_form_a_pool() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;
    let h = host("pool");
    let env = format!("VIRTUAL_HOST={h}");
    let a = engine.run("pool-a", &["-e", &env]);
    let b = engine.run("pool-b", &["-e", &env]);
    // Both in the pool: requests alternate between them.
    eventually(LIMIT, "both containers in the pool", || async {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let r = get(p.addr, &h, "/").await;
            if r.status != 200 {
                return None;
            }
            seen.push(field(&r.body, "name"));
        }
        let alternating = seen.windows(2).all(|w| w[0] != w[1]);
        alternating.then_some(())
    })
    .await;
    for _ in 0..6 {
        let name = field(&get(p.addr, &h, "/").await.body, "name");
        assert!(name == a.name || name == b.name);
    }
    // One stops: the other takes every request.
    a.stop();
    // Round-robin hands b every other request while a is still listed, so
    // wait for a run of answers from b alone.
    eventually(LIMIT, "only b left", || async {
        for _ in 0..4 {
            let r = get(p.addr, &h, "/").await;
            if r.status != 200 || field(&r.body, "name") != b.name {
                return None;
            }
        }
        Some(())
    })
    .await;
    for _ in 0..4 {
        assert_eq!(field(&get(p.addr, &h, "/").await.body, "name"), b.name);
    }
}

#[tokio::test]
async fn network_disconnect_and_reconnect() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;
    let h = host("net");
    let c = engine.run("net", &["-e", &format!("VIRTUAL_HOST={h}")]);
    until_status(&p, &h, "/", 200).await;

    docker::docker(&["network", "disconnect", "bridge", &c.id]);
    until_status(&p, &h, "/", 503).await;
    let warned = format!("container {} is unreachable", c.name);
    eventually(LIMIT, "the unreachable warning", || async {
        p.stderr().iter().any(|l| l.contains(&warned)).then_some(())
    })
    .await;

    docker::docker(&["network", "connect", "bridge", &c.id]);
    let body = until_status(&p, &h, "/", 200).await;
    assert_eq!(field(&body, "name"), c.name);

    // --network: only addresses on that network count.
    let net = TestNetwork::create("only");
    let q = ProxyProcess::spawn("", &["--docker", &engine.url, "--network", &net.name]).await;
    let why = format!("it is not attached to --network {}", net.name);
    eventually(LIMIT, "the --network warning", || async {
        q.stderr()
            .iter()
            .any(|l| l.contains(&c.name) && l.contains(&why))
            .then_some(())
    })
    .await;
    assert_eq!(get(q.addr, &h, "/").await.status, 503);
    docker::docker(&["network", "connect", &net.name, &c.id]);
    let body = until_status(&q, &h, "/", 200).await;
    assert_eq!(field(&body, "name"), c.name);
    let r = get(q.addr, &h, "/").await;
    assert_eq!(r.status, 200);
    docker::docker(&["network", "disconnect", &net.name, &c.id]);
    until_status(&q, &h, "/", 503).await;
}

#[tokio::test]
async fn unhealthy_containers_stay_out_of_the_pool_until_healthy() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;
    let h = host("health");
    let c = engine.run(
        "health",
        &[
            "-e",
            &format!("VIRTUAL_HOST={h}"),
            "--health-cmd",
            "/echo check",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "0s",
        ],
    );
    // starting, then unhealthy (no flag yet): out of the pool.
    let state = || docker::docker(&["inspect", "-f", "{{.State.Health.Status}}", &c.id]);
    eventually(LIMIT, "unhealthy", || async {
        (state() == "unhealthy").then_some(())
    })
    .await;
    eventually(LIMIT, "the out-of-pool note", || async {
        let log = p.stderr();
        log.iter()
            .any(|l| l.contains(&c.name) && l.contains("out of its pool"))
            .then_some(())
    })
    .await;
    assert_eq!(get(p.addr, &h, "/").await.status, 503);

    // Flip the health flag directly on the container: healthy, in the pool.
    let ip = c.ip_on("bridge");
    let direct = SocketAddr::new(ip, 80);
    assert_eq!(get(direct, "x", "/healthy").await.status, 200);
    let body = until_status(&p, &h, "/", 200).await;
    assert_eq!(field(&body, "name"), c.name);

    assert_eq!(get(direct, "x", "/unhealthy").await.status, 200);
    until_status(&p, &h, "/", 503).await;
}

#[tokio::test]
async fn a_bad_container_is_skipped_and_named_while_good_ones_route() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;
    let good_host = host("good");
    let good = engine.run("good", &["-e", &format!("VIRTUAL_HOST={good_host}")]);
    let bad_port = engine.run(
        "badport",
        &[
            "-e",
            &format!("VIRTUAL_HOST={}", host("badport")),
            "-e",
            "VIRTUAL_PORT=abc",
        ],
    );
    let bad_regex = engine.run("badregex", &["-e", "VIRTUAL_HOST=~^(unclosed"]);
    let empty = engine.run("empty", &["-e", "VIRTUAL_HOST= , "]);
    let shared_host = host("shared");
    // A bad container on a good host: that host still serves the good one.
    let shared_good = engine.run(
        "sharedgood",
        &["-e", &format!("VIRTUAL_HOST={shared_host}")],
    );
    let _shared_bad = engine.run(
        "sharedbad",
        &[
            "-e",
            &format!("VIRTUAL_HOST={shared_host}"),
            "-e",
            "VIRTUAL_PORT=99999",
        ],
    );

    let body = until_status(&p, &good_host, "/", 200).await;
    assert_eq!(field(&body, "name"), good.name);
    for _ in 0..4 {
        let body = until_status(&p, &shared_host, "/", 200).await;
        assert_eq!(field(&body, "name"), shared_good.name);
    }
    for (c, value) in [
        (&bad_port, "abc"),
        (&bad_regex, "(unclosed"),
        (&empty, "VIRTUAL_HOST"),
    ] {
        eventually(LIMIT, &format!("a warning naming {}", c.name), || async {
            let log = p.stderr();
            let hits: Vec<&String> = log.iter().filter(|l| l.contains(&c.name)).collect();
            (hits.len() == 1
                && hits[0].contains("WARN")
                && hits[0].contains("skipped")
                && hits[0].contains(value))
            .then_some(())
        })
        .await;
    }
}

/// What the log says about containers is also state: the published
/// snapshot carries each note with its container, key and value.
#[tokio::test]
async fn notes_on_containers_are_published_with_the_table() {
    use branchgate::routes::{NoteKind, Origin, ProviderId, Severity};
    let Some(engine) = engine() else { return };
    let p = support::Proxy::builder()
        .arg("--docker")
        .arg(&engine.url)
        .spawn()
        .await;
    let bad = engine.run(
        "noteport",
        &[
            "-e",
            &format!("VIRTUAL_HOST={}", host("noteport")),
            "-e",
            "VIRTUAL_PORT=abc",
        ],
    );
    let note = eventually(LIMIT, "the note on the bad container", || async {
        let snapshot = p.table.load();
        snapshot
            .notes()
            .iter()
            .find(|n| n.source == bad.name)
            .cloned()
    })
    .await;
    assert_eq!(note.origin, Origin::Provider(ProviderId::Docker));
    assert_eq!(note.severity, Severity::Warning);
    assert_eq!(
        note.kind,
        NoteKind::Invalid {
            key: "VIRTUAL_PORT".into(),
            value: "abc".into()
        }
    );
    assert!(note.message.contains("skipped"), "{}", note.message);
    // Gone once the container stops.
    bad.stop();
    eventually(LIMIT, "the note to go", || async {
        let snapshot = p.table.load();
        (!snapshot.notes().iter().any(|n| n.source == bad.name)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn branch_labelled_containers_form_environments() {
    let Some(engine) = engine() else { return };
    let domain = format!("{}.test", docker::unique("env"));
    let p = ProxyProcess::spawn("", &["--docker", &engine.url, "--branch-domain", &domain]).await;
    let label = |branch: &str, role: &str| {
        vec![
            "--label".to_owned(),
            format!("branchgate.branch={branch}"),
            "--label".to_owned(),
            format!("branchgate.role={role}"),
        ]
    };
    let run = |hint: &str, branch: &str, role: &str, extra: &[&str]| {
        let mut flags = label(branch, role);
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        engine.run(hint, &flags)
    };
    let fe_login = run("fe-login", "feature/Login", "frontend", &[]);
    let fe_main = run("fe-main", "main", "frontend", &[]);
    // Two replicas of one backend branch: one pool. One listens on 8080 (branchgate.port).
    let be_main_a = run("be-main-a", "main", "backend", &[]);
    let be_main_b = run(
        "be-main-b",
        "main",
        "backend",
        &["-e", "ECHO_PORTS=8080", "--label", "branchgate.port=8080"],
    );
    let be_pay = run("be-pay", "payments", "backend", &[]);

    let name_at = |host: String, path: &'static str| {
        let p = &p;
        async move { field(&until_status(p, &host, path, 200).await, "name") }
    };
    assert_eq!(
        name_at(format!("feature-login.payments.{domain}"), "/").await,
        fe_login.name
    );
    assert_eq!(
        name_at(format!("feature-login.payments.{domain}"), "/api/x").await,
        be_pay.name
    );
    assert_eq!(
        name_at(format!("main.payments.{domain}"), "/").await,
        fe_main.name
    );
    // <fe>.DOMAIN: API to the default branch (main), whose two replicas share the load.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(name_at(format!("feature-login.{domain}"), "/api/x").await);
    }
    let want: std::collections::BTreeSet<String> =
        [be_main_a.name.clone(), be_main_b.name.clone()].into();
    assert_eq!(seen, want);
    // The matrix lists every pair.
    let matrix = String::from_utf8_lossy(&get(p.addr, &domain, "/").await.body).into_owned();
    for pair in [
        "feature-login.main",
        "feature-login.payments",
        "main.main",
        "main.payments",
    ] {
        assert!(
            matrix.contains(&format!("//{pair}.{domain}/")),
            "{pair}: {matrix}"
        );
    }

    // A branch container stops: its combinations 404, the others keep working.
    be_pay.stop();
    let gone = until_status(&p, &format!("main.payments.{domain}"), "/api/x", 404).await;
    assert!(String::from_utf8_lossy(&gone).contains("payments"));
    assert_eq!(
        name_at(format!("main.payments.{domain}"), "/").await,
        fe_main.name
    );
    let name = name_at(format!("main.main.{domain}"), "/api/x").await;
    assert!(name == be_main_a.name || name == be_main_b.name, "{name}");
    drop(fe_login);
    until_status(&p, &format!("feature-login.main.{domain}"), "/", 404).await;
}

#[tokio::test]
async fn at_the_connection_cap_the_watcher_keeps_routing_new_containers() {
    let Some(engine) = engine() else { return };
    // soft = hard = 256 descriptors: the cap is 96 client connections. The
    // silent sockets below must reach the proxy to count against it
    // (deferred accept would leave them with the kernel for a second).
    let p = ProxyProcess::spawn_with_nofile(
        "",
        &["--docker", &engine.url, "--defer-accept=false"],
        256,
        true,
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(p.addr).await.unwrap());
    }
    // The engine connection and the upstream connections still have descriptors.
    let h = host("at-cap");
    let _c = engine.run("at-cap", &["-e", &format!("VIRTUAL_HOST={h}")]);
    let body = until_status(&p, &h, "/", 200).await;
    assert!(!body.is_empty());
    let log = p.stderr().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("client connection limit reached"), "{log}");
}

#[tokio::test]
async fn containers_choose_their_certificate_and_https_method() {
    use support::tls::{self, Ca, Client, Key};
    let Some(engine) = engine() else { return };
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (named, env_only, redirect) = (host("certname"), host("httpsenv"), host("redirect"));
    // One certificate for two containers, chosen by CERT_NAME (env) and the label.
    ca.issue("shared", &[&named, &env_only], Key::Ec)
        .write(dir.path(), "shared");
    ca.issue("own", &[&redirect], Key::Ec)
        .write(dir.path(), &redirect);
    let p = ProxyProcess::spawn(
        "",
        &[
            "--docker",
            &engine.url,
            "--https",
            "127.0.0.1:0",
            "--certs",
            dir.path().to_str().unwrap(),
        ],
    )
    .await;
    let https = p.https.unwrap();
    let _a = engine.run(
        "certname",
        &[
            "-e",
            &format!("VIRTUAL_HOST={named}"),
            "--label",
            "branchgate.cert_name=shared",
            "--label",
            "branchgate.https_method=nohttp",
        ],
    );
    let _b = engine.run(
        "httpsenv",
        &[
            "-e",
            &format!("VIRTUAL_HOST={env_only}"),
            "-e",
            "CERT_NAME=shared",
            "-e",
            "HTTPS_METHOD=noredirect",
            "-e",
            "HSTS=off",
        ],
    );
    let _c = engine.run("redirect", &["-e", &format!("VIRTUAL_HOST={redirect}")]);
    // nohttp: plain HTTP is refused, HTTPS serves with the CERT_NAME certificate.
    until_status(&p, &named, "/", 503).await;
    let s = Client::new(&named).connect(https).await.unwrap();
    assert_eq!(s.cn, "shared");
    let (r, _) = s.get(&named, "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
    // noredirect and HSTS=off from the environment.
    until_status(&p, &env_only, "/", 200).await;
    let r = tls::get(https, &env_only, "/").await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert!(!r.headers.contains_key("strict-transport-security"));
    assert_eq!(
        Client::new(&env_only).connect(https).await.unwrap().cn,
        "shared"
    );
    // Its own certificate, and the default method: redirected.
    until_status(&p, &redirect, "/x", 301).await;
    let r = get(p.addr, &redirect, "/x").await;
    assert_eq!(
        r.headers["location"],
        format!("https://{redirect}:{}/x", https.port()).as_str()
    );
    assert_eq!(
        tls::status(https, &redirect, "/").await,
        http::StatusCode::OK
    );
}

#[tokio::test]
async fn access_and_limit_labels_protect_their_container() {
    let Some(engine) = engine() else { return };
    let p = proxy(&engine.url).await;
    let guarded = host("guarded");
    let fenced = host("fenced");
    // {SHA} of "secret"; `docker run --label` takes it as is (compose would want `$$`).
    let _g = engine.run(
        "guarded",
        &[
            "-e",
            &format!("VIRTUAL_HOST={guarded}"),
            "--label",
            "branchgate.auth.basic=ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "--label",
            "branchgate.max_body=1k",
        ],
    );
    let _f = engine.run(
        "fenced",
        &[
            "-e",
            &format!("VIRTUAL_HOST={fenced}"),
            "--label",
            "branchgate.allow=10.0.0.0/8",
        ],
    );
    let body = until_status(&p, &guarded, "/", 401).await;
    assert!(String::from_utf8_lossy(&body).contains("401 Authorization Required"));
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ann:secret")
    );
    let r = support::get_with(p.addr, &guarded, "/", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    let upload = http::Request::post("/")
        .header("host", &guarded)
        .header("authorization", &auth)
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            2048
        ])))
        .unwrap();
    let r = support::client::Conn::open(p.addr)
        .await
        .send(upload)
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    until_status(&p, &fenced, "/", 403).await;
}
