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
