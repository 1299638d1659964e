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
/// below that range (20000..32000, never used for outgoing connections), start
/// at an offset from the process id, and are never handed out twice in one
/// process.
pub fn free_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 97 % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (BASE + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {BASE}..{}", BASE + SPAN);
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
