//! Engine faults: the proxy keeps its routes while the Docker engine is down,
//! reconnects, and resyncs. A private `dockerd` (its own socket and data root,
//! `--live-restore`) is stopped and restarted under a running proxy; its own
//! test binary so nothing else shares the moment.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::docker::{PrivateEngine, engine, field, unique};
use support::{ProxyProcess, eventually, get};

const LIMIT: Duration = Duration::from_secs(30);

async fn status(addr: SocketAddr, host: &str) -> Option<(u16, Vec<u8>)> {
    let r = tokio::time::timeout(Duration::from_secs(2), get(addr, host, "/"))
        .await
        .ok()?;
    Some((r.status.as_u16(), r.body.to_vec()))
}

#[tokio::test]
async fn a_dockerd_restart_keeps_routes_and_resyncs() {
    let Some(_) = engine() else { return };
    // A second dockerd needs root and the daemon binary.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    let dockerd = std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok();
    if !(root && dockerd) {
        let why = "a private dockerd needs root and the dockerd binary";
        support::skip_unless_ci("dockerd restart test", why);
        return;
    }
    let mut private = PrivateEngine::start();
    let run = |private: &PrivateEngine, hint: &str, host: &str| {
        private.cli(&[
            "run",
            "-d",
            "--name",
            &unique(hint),
            "-e",
            &format!("VIRTUAL_HOST={host}"),
            "-e",
            &format!("ECHO_NAME={hint}"),
            support::docker::IMAGE,
        ])
    };
    let (keep, vanish, later) = (
        "keep.restart.test",
        "vanish.restart.test",
        "later.restart.test",
    );
    run(&private, "keep", keep);
    let gone = run(&private, "vanish", vanish);
    let p = ProxyProcess::spawn("", &["--docker", &private.url]).await;
    for (host, name) in [(keep, "keep"), (vanish, "vanish")] {
        eventually(LIMIT, host, || async {
            let (s, body) = status(p.addr, host).await?;
            (s == 200 && field(&body, "name") == name).then_some(())
        })
        .await;
    }

    let pid = private.cli(&["inspect", "-f", "{{.State.Pid}}", &gone]);
    private.down();
    eventually(LIMIT, "the proxy to notice the outage", || async {
        p.stderr()
            .iter()
            .any(|l| l.contains("docker unavailable"))
            .then_some(())
    })
    .await;
    // The engine is down: the last known routes keep serving.
    for host in [keep, vanish] {
        assert_eq!(
            status(p.addr, host).await.map(|s| s.0),
            Some(200),
            "{host} during the outage"
        );
    }
    // A container ends while nobody watches.
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );

    private.up();
    // Resynced: the vanished container's host is gone, the other still serves,
    // and events flow again.
    eventually(LIMIT, "vanish to be dropped on resync", || async {
        (status(p.addr, vanish).await?.0 == 503).then_some(())
    })
    .await;
    assert_eq!(status(p.addr, keep).await.map(|s| s.0), Some(200));
    // A container that routes nothing publishes nothing: of the two started
    // next, only the routed one changes the table.
    let published = || {
        p.stderr()
            .iter()
            .filter(|l| l.contains("route table published"))
            .count()
    };
    let before = published();
    private.cli(&[
        "run",
        "-d",
        "--name",
        &unique("unrouted"),
        support::docker::IMAGE,
    ]);
    run(&private, "later", later);
    eventually(LIMIT, "a container started after the restart", || async {
        let (s, body) = status(p.addr, later).await?;
        (s == 200 && field(&body, "name") == "later").then_some(())
    })
    .await;
    assert_eq!(published(), before + 1, "{:#?}", p.stderr());
    let log = p.stderr();
    assert!(log.iter().any(|l| l.contains("docker synced")), "{log:?}");
}
