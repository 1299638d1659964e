//! Start-to-routable latency against a real Docker engine.
//!
//! Starts the release `branchgate` binary with `--docker`, then starts N
//! pre-created echo containers one at a time (each with its own
//! `VIRTUAL_HOST`), and for each measures the time from the engine's `start`
//! event (its `timeNano`) to the first `200` through the proxy, polling every
//! 0.5 ms on a fresh connection. Containers stay running, so the last ones are
//! published into a table of N routes. Prints p50/p90/p99/max and the
//! publisher's own `took_us` per publish from the proxy log. With N < 100 the
//! p99 is the maximum.
//!
//! ```text
//! cargo build --release --bin branchgate
//! N=100 cargo bench --bench docker_routable
//! ```
//! Env: `N` (default 50), `BG_BIN` (default `target/release/branchgate`).
//! Prints its results on stdout (the point of a bench binary).
//! Needs the echo image (`scripts/docker-engine.sh` builds it); without an
//! engine it fails under `CI=true` and skips loudly otherwise.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;

const IMAGE: &str = "branchgate-test-echo:latest";

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let root = env!("CARGO_MANIFEST_DIR");
    let bin =
        std::env::var("BG_BIN").unwrap_or_else(|_| format!("{root}/target/release/branchgate"));
    let engine_ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !engine_ok {
        let why = format!("no Docker engine with {IMAGE} (scripts/docker-engine.sh makes both)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("docker_routable bench: {why}");
        }
        eprintln!("\n!!!!!! SKIPPING docker_routable bench: {why} !!!!!!\n");
        return;
    }
    assert!(
        std::path::Path::new(&bin).exists(),
        "no binary at {bin}: cargo build --release first"
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut proxy = Command::new(&bin)
        .args([
            "--http",
            &addr.to_string(),
            "--https",
            "off",
            "--workers",
            "1",
            "--access-log",
            "off",
            "--admin",
            "off",
        ])
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branchgate starts");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let log = log.clone();
        let stderr = proxy.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }

    let tag = format!("bench-{}", std::process::id());
    let mut containers = Vec::with_capacity(n);
    for i in 0..n {
        let host = format!("c{i}.{tag}.test");
        let id = docker(&[
            "create",
            "--label",
            "branchgate-test",
            "--name",
            &format!("{tag}-{i}"),
            "-e",
            &format!("VIRTUAL_HOST={host}"),
            IMAGE,
        ]);
        containers.push((id, host));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let latencies = rt.block_on(measure(addr, &containers, &log));

    let _ = Command::new("kill").arg(proxy.id().to_string()).status();
    let _ = proxy.wait();
    let ids: Vec<&str> = containers.iter().map(|(id, _)| id.as_str()).collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids);
    docker(&rm);

    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "start-to-routable over {n} containers: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    let mut took: Vec<u64> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["took_us"].as_u64())
        .collect();
    took.sort_unstable();
    if !took.is_empty() {
        println!(
            "publishes: {}, took median {} us, max {} us (table of up to {n} routes)",
            took.len(),
            took[took.len() / 2],
            took[took.len() - 1]
        );
    }
}

async fn measure(
    addr: SocketAddr,
    containers: &[(String, String)],
    log: &Mutex<Vec<String>>,
) -> Vec<Duration> {
    let docker = Docker::connect_with_local_defaults().unwrap();
    let started: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(HashMap::from([
            ("type".into(), vec!["container".into()]),
            ("event".into(), vec!["start".into()]),
        ])),
        ..Default::default()
    }));
    {
        let started = started.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = events.next().await {
                if let (Some(id), Some(t)) = (ev.actor.and_then(|a| a.id), ev.time_nano) {
                    started.lock().unwrap().insert(id, t);
                }
            }
        });
    }
    // Measure from a synced proxy, not its start-up.
    wait(addr, "none.test", |s| s == 503).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("docker synced"))
    {
        assert!(
            Instant::now() < deadline,
            "the proxy never synced with docker"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut out = Vec::with_capacity(containers.len());
    for (id, host) in containers {
        docker.start_container(id, None).await.unwrap();
        let routable = wait(addr, host, |s| s == 200).await;
        let event_ns = loop {
            if let Some(t) = started.lock().unwrap().get(id) {
                break *t;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let routable_ns = routable.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
        out.push(Duration::from_nanos((routable_ns - event_ns).max(0) as u64));
    }
    out
}

/// Polls `host` until its status satisfies `done`; returns the wall-clock time of that answer.
async fn wait(addr: SocketAddr, host: &str, done: impl Fn(u16) -> bool) -> SystemTime {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if status(addr, host).is_some_and(&done) {
            return SystemTime::now();
        }
        assert!(Instant::now() < deadline, "{host} never became routable");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn status(addr: SocketAddr, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
