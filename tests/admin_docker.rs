//! The admin API against a real Docker engine and the real binary: views and
//! the event feed follow containers starting and stopping, a container's
//! log stream follows it (stdout and stderr apart) and ends with a note when
//! it stops, closing a log stream closes the follow's connection to the
//! engine, and the live request feed shows a request made through the proxy
//! with its credentials hidden.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::docker::{self, engine};
use support::sse::Sse;
use support::{ProxyProcess, eventually, get, get_with};

const TOKEN: &str = "s3cret-admin-token-0123";
const WAIT: Duration = Duration::from_secs(15);

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn proxy(url: &str, domain: &str) -> ProxyProcess {
    let args = [
        "--docker",
        url,
        "--branch-domain",
        domain,
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        TOKEN,
    ];
    ProxyProcess::spawn("", &args).await
}

async fn api(admin: SocketAddr, path: &str) -> serde_json::Value {
    let auth = bearer();
    let r = get_with(admin, "admin", path, &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK, "{path}");
    r.json()
}

fn branch_flags(branch: &str, role: &str) -> Vec<String> {
    vec![
        "--label".into(),
        format!("branchgate.branch={branch}"),
        "--label".into(),
        format!("branchgate.role={role}"),
    ]
}

/// Slugs of the deployed members of `role` ("frontends"/"backends").
async fn slugs(admin: SocketAddr, role: &str) -> Vec<String> {
    let b = api(admin, "/api/branches").await;
    (b[role].as_array().unwrap().iter())
        .map(|m| m["slug"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn views_events_logs_and_the_request_feed_follow_containers() {
    let Some(engine) = engine() else { return };
    let domain = format!("{}.test", docker::unique("adm"));
    let p = proxy(&engine.url, &domain).await;
    let admin = p.admin.unwrap();
    let auth = bearer();
    let auth = [("authorization", auth.as_str())];

    // The API and the streams need the token.
    let r = get(admin, "admin", "/api/events").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let events = Sse::open(admin, "/api/events", &auth).await;

    let flags = branch_flags("feature/Dash", "frontend");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let fe = engine.run("dash-fe", &flags);
    let flags = branch_flags("main", "backend");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let be = engine.run("dash-be", &flags);

    // Views follow the containers.
    eventually(WAIT, "both members in /api/branches", || async {
        let (f, b) = (
            slugs(admin, "frontends").await,
            slugs(admin, "backends").await,
        );
        (f == ["feature-dash"] && b == ["main"]).then_some(())
    })
    .await;
    let branches = api(admin, "/api/branches").await;
    assert_eq!(branches["frontends"][0]["containers"][0], fe.name.as_str());
    assert_eq!(branches["frontends"][0]["branch"], "feature/Dash");
    assert_eq!(branches["url_scheme"], "http");
    let containers = api(admin, "/api/containers").await;
    let names: Vec<&str> = (containers["containers"].as_array().unwrap().iter())
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&fe.name.as_str()) && names.contains(&be.name.as_str()),
        "{containers}"
    );

    // The event feed says so, live.
    let started = format!("container {} started", fe.name);
    events
        .wait_for(WAIT, "the start event", |m| {
            m.json()["message"] == started.as_str()
        })
        .await;
    events
        .wait_for(WAIT, "a publish deploying the branch", |m| {
            let j = m.json();
            j["kind"] == "publish"
                && (j["data"]["branches_added"].as_array().unwrap().iter())
                    .any(|b| b == "frontend feature-dash")
        })
        .await;

    // The container's logs: the last lines, then what it prints after.
    let logs_path = format!("/api/containers/{}/logs?follow=1&tail=5", fe.name);
    let logs = Sse::open(admin, &logs_path, &auth).await;
    let host = format!("feature-dash.main.{domain}");
    support::until_status(&p, &host, "/", 200, WAIT).await;
    let feed = Sse::open(admin, &format!("/api/requests?host={host}"), &auth).await;
    let other = Sse::open(admin, "/api/requests?host=elsewhere.test", &auth).await;

    let secret = [
        ("authorization", "Bearer very-secret-value"),
        ("cookie", "session=very-secret-cookie"),
    ];
    let r = get_with(p.addr, &host, "/log/hello-from-the-test", &secret).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(p.addr, &host, "/log/stderr/oops-on-stderr").await;
    assert_eq!(r.status, StatusCode::OK);

    let out = logs
        .wait_for(WAIT, "the stdout line", |m| {
            m.data.contains("hello-from-the-test")
        })
        .await
        .json();
    assert_eq!(out["stream"], "stdout");
    // Colours arrive as sent; the dashboard renders them.
    assert_eq!(out["line"], "\u{1b}[32mecho:\u{1b}[0m hello-from-the-test");
    let err = logs
        .wait_for(WAIT, "the stderr line", |m| {
            m.data.contains("oops-on-stderr")
        })
        .await
        .json();
    assert_eq!(err["stream"], "stderr");

    // The request feed: the request, credentials hidden.
    let seen = feed
        .wait_for(WAIT, "the request in the feed", |m| {
            m.data.contains("hello-from-the-test")
        })
        .await;
    let j = seen.json();
    assert_eq!(
        (j["method"].as_str(), j["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert_eq!(j["host"], host.as_str());
    assert!(j["upstream"].as_str().is_some(), "{j}");
    let headers = j["headers"].as_array().unwrap();
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(value("authorization").as_deref(), Some("[hidden]"));
    assert_eq!(value("cookie").as_deref(), Some("[hidden]"));
    assert!(!seen.data.contains("very-secret"), "{}", seen.data);
    assert!(
        other.messages().is_empty(),
        "another host's feed stays quiet"
    );

    // Stopping it: the log stream ends with a note, the views and the
    // events follow.
    fe.stop();
    let end = logs
        .wait_for(WAIT, "the end note", |m| m.event == "end")
        .await
        .json();
    let note = end["message"].as_str().unwrap();
    assert!(
        note.contains(&fe.name) && note.contains("stopped (exit code"),
        "{note}"
    );
    eventually(WAIT, "the log stream to end", || async {
        logs.ended().then_some(())
    })
    .await;
    let stopped = format!("container {} stopped", fe.name);
    events
        .wait_for(WAIT, "the stop event", |m| {
            m.json()["message"] == stopped.as_str()
        })
        .await;
    eventually(WAIT, "the member gone from /api/branches", || async {
        slugs(admin, "frontends").await.is_empty().then_some(())
    })
    .await;
    // The engine's events are counted.
    let metrics = get(admin, "admin", "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let events: f64 = (text.lines())
        .find_map(|l| l.strip_prefix("branchgate_docker_events_total "))
        .and_then(|v| v.parse().ok())
        .expect("branchgate_docker_events_total");
    assert!(events >= 4.0, "start and stop of two containers: {events}");
    drop(be);
}

/// The inodes of the Unix sockets `pid` holds (its connections to the
/// engine among them).
fn unix_sockets(pid: u32) -> HashSet<String> {
    let unix: HashSet<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_owned))
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .filter(|inode| unix.contains(inode))
        .collect()
}

#[tokio::test]
async fn closing_a_log_stream_ends_the_follow_on_the_engine() {
    let Some(engine) = engine() else { return };
    let domain = format!("{}.test", docker::unique("admfollow"));
    let p = proxy(&engine.url, &domain).await;
    let admin = p.admin.unwrap();
    // Routed, so /api/containers shows when it is seen (not a branch: the
    // other test here counts the branches every proxy on the engine sees).
    let env = format!("VIRTUAL_HOST=follow.{domain}");
    let c = engine.run("follow", &["-e", &env]);
    let auth = bearer();
    let auth = [("authorization", auth.as_str())];
    // The watcher has synced and seen the container: its events connection
    // is among the sockets held before the page opens.
    eventually(WAIT, "the container in /api/containers", || async {
        let containers = api(admin, "/api/containers").await;
        (containers["containers"].as_array().unwrap().iter())
            .any(|x| x["name"] == c.name.as_str())
            .then_some(())
    })
    .await;
    let before = unix_sockets(p.pid);

    let path = format!("/api/containers/{}/logs?follow=1&tail=1", c.name);
    let logs = Sse::open(admin, &path, &auth).await;
    // A line arrived: the follow's connection to the engine is open now.
    logs.wait_for(WAIT, "the container's first log line", |m| {
        m.data.contains("echo: listening")
    })
    .await;
    // Every socket opened since, the follow's among them. Other tests'
    // containers make the watcher inspect them on short-lived connections
    // of its own, so this set may hold some of those too: they close anyway.
    let opened: HashSet<String> = unix_sockets(p.pid).difference(&before).cloned().collect();
    assert!(
        !opened.is_empty(),
        "no connection to the engine for the follow"
    );
    assert!(!logs.ended());
    drop(logs);
    // The page went away: the proxy drops the engine's stream and its
    // connection, which is what ends a follow on the engine.
    eventually(WAIT, "the follow's connection closed", || async {
        let now = unix_sockets(p.pid);
        opened.is_disjoint(&now).then_some(())
    })
    .await;

    // Bad input: an id the engine would read as a path, a bad tail, an
    // unknown container (an error message, then the stream ends).
    let r = get_with(admin, "admin", "/api/containers/../logs", &auth).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let path = format!("/api/containers/{}/logs?tail=lots", c.name);
    let r = get_with(admin, "admin", &path, &auth).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("tail=lots"));
    let missing = Sse::open(
        admin,
        "/api/containers/bgt-no-such-container/logs?follow=1",
        &auth,
    )
    .await;
    let err = missing
        .wait_for(WAIT, "an error for a missing container", |m| {
            m.event == "error"
        })
        .await;
    assert!(err.data.contains("bgt-no-such-container"), "{}", err.data);
    eventually(WAIT, "the stream to end", || async {
        missing.ended().then_some(())
    })
    .await;
}
