//! Builders for black-box tests: in-process echo backends, a proxy running
//! in-process or as the real binary, and a small HTTP client. Everything binds
//! `127.0.0.1:0`; waits poll to a deadline.
#![allow(dead_code, unused_imports)]

pub mod acme;
pub mod backend;
pub mod client;
pub mod docker;
pub mod knot;
pub mod pebble;
pub mod proxy;
pub mod raw;
pub mod sse;
pub mod tls;
pub mod webdriver;

pub use backend::Backend;
pub use client::{Reply, get, get_with, raw};
pub use proxy::{Proxy, ProxyProcess};

use std::future::Future;
use std::time::{Duration, Instant};

/// A test that needs something this machine lacks: fails under `CI=true`
/// (where scripts/test.sh provides it), otherwise says so loudly so the caller
/// can return.
pub fn skip_unless_ci(test: &str, why: &str) {
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{test} needs this under CI=true: {why}"
    );
    eprintln!("\n!!!!!! SKIPPING {test}: {why} !!!!!!\n");
}

/// A loopback port for a server a test starts itself (Pebble, Knot, the real
/// binary on a port the CA must reach), free for TCP and UDP just now.
///
/// A port picked with `bind(0)` and released comes from the kernel's
/// ephemeral range, where any outgoing connection of the parallel tests may
/// take it as its local port before the server binds it. These come from
/// 10000 up to the start of that range (`ip_local_port_range`, never used for
/// outgoing connections), start at an offset from the process id, and are
/// never handed out twice in one process.
pub fn free_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 10_000;
    static SPAN: OnceLock<u32> = OnceLock::new();
    let span = *SPAN.get_or_init(|| {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|_| "32768 60999".into());
        let low: u32 = range
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(32768);
        assert!(
            low >= BASE + 2_000,
            "the ephemeral port range starts at {low}: tests need ports below it, from {BASE}"
        );
        low - BASE
    });
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 97 % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = (BASE + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {BASE}..{}", BASE + span);
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(limit, what, check, String::new).await
}

/// [`eventually`], whose timeout also says `context()` (say, a process's log).
pub async fn eventually_or<T, F, Fut>(
    limit: Duration,
    what: &str,
    mut check: F,
    context: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}{}", context());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `host` + `path` answers `status` through `p`; returns the
/// body. A container's route comes with its start, which can be a moment
/// before its server listens (a 502 until then).
pub async fn until_status(
    p: &ProxyProcess,
    host: &str,
    path: &str,
    status: u16,
    limit: Duration,
) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    loop {
        // A request sent just before a container is paused or cut off waits
        // for it; give up on that one and ask again.
        let last = match tokio::time::timeout(Duration::from_secs(2), get(p.addr, host, path)).await
        {
            Ok(r) if r.status.as_u16() == status => return r.body.to_vec(),
            Ok(r) => format!("{}: {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(_) => "no answer within 2s".to_owned(),
        };
        assert!(
            Instant::now() < deadline,
            "{host}{path}: still {last} after {limit:?}, waiting for {status}\nproxy log:\n{}",
            p.stderr().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
