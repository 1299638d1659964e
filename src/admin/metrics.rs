//! Prometheus metrics: counters the request record feeds (a [`Sink`] in
//! front of the access log), and gauges read from the published state at
//! scrape time. Rendered in the text exposition format on `/metrics`.
//!
//! Label values are bounded: a request is labelled with the name of the
//! route that took it (its host pattern and path, or the branch member), or
//! `_other`; methods outside the standard ones are `OTHER`. What clients
//! send never becomes a label by itself.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use http::{Method, StatusCode};

use super::Sources;
use crate::events::PUBLISH_BUCKETS;
use crate::proxy::record::{RequestRecord, Sink};

/// Upper bounds of the duration histogram, in seconds (Prometheus' defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label of a route nothing matched.
const OTHER_ROUTE: &str = "_other";

/// Counters fed by every completed request.
#[derive(Debug)]
pub struct Metrics {
    requests: DashMap<(Arc<str>, u16, &'static str), AtomicU64, crate::hash::Fast>,
    /// [`OTHER_ROUTE`], allocated once.
    other: Arc<str>,
    /// Per bucket (cumulative at render time), then +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_us: AtomicU64,
    /// 502, 503 and 504 answers: the upstream could not be used.
    upstream_errors: [AtomicU64; 3],
    /// A moment on both clocks: a record's end in unix time without
    /// reading the wall clock per request.
    epoch: (std::time::Instant, u64),
}

/// Feeds [`Metrics`], then hands the record on (to the access log).
#[derive(Debug)]
pub struct Tee {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The next sink.
    pub next: Box<dyn Sink>,
}

impl Sink for Tee {
    fn record(&self, record: &RequestRecord) {
        self.metrics.observe(record);
        self.next.record(record);
    }

    fn wants_headers(&self) -> bool {
        self.next.wants_headers()
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: DashMap::default(),
            other: Arc::from(OTHER_ROUTE),
            buckets: Default::default(),
            duration_sum_us: AtomicU64::new(0),
            upstream_errors: Default::default(),
            epoch: (
                std::time::Instant::now(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
        }
    }
}

impl Metrics {
    /// Counts one completed request: a shared-lock lookup and relaxed
    /// atomic adds, an insert only for a new (route, code, method).
    pub fn observe(&self, r: &RequestRecord) {
        if let Some(pool) = &r.pool {
            let end = (r.start + r.duration).saturating_duration_since(self.epoch.0);
            pool.touch(self.epoch.1 + end.as_millis() as u64);
        }
        let route = r.pool.as_ref().map_or(&self.other, |p| p.key().route());
        let key = (route.clone(), r.status.as_u16(), method_label(&r.method));
        match self.requests.get(&key) {
            Some(c) => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.requests
                    .entry(key)
                    .or_default()
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let secs = r.duration.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us
            .fetch_add(r.duration.as_micros() as u64, Ordering::Relaxed);
        let kind = match r.status {
            StatusCode::BAD_GATEWAY => Some(0),
            StatusCode::SERVICE_UNAVAILABLE => Some(1),
            StatusCode::GATEWAY_TIMEOUT => Some(2),
            _ => None,
        };
        if let Some(k) = kind
            && r.upstream.is_none()
        {
            self.upstream_errors[k].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets routes that are no longer published (so a branch torn down
    /// does not stay a label forever); called at scrape time.
    fn prune(&self, live: &std::collections::HashSet<&str>) {
        self.requests
            .retain(|(route, _, _), _| **route == *OTHER_ROUTE || live.contains(&**route));
    }
}

/// Renders every metric in the text exposition format.
pub fn render(metrics: &Metrics, sources: &Sources) -> String {
    let snapshot = sources.routes.load();
    let mut out = String::with_capacity(4096);
    let live: std::collections::HashSet<&str> = snapshot
        .pools()
        .iter()
        .map(|p| &**p.key().route())
        .collect();
    metrics.prune(&live);

    header(
        &mut out,
        "branchgate_requests_total",
        "counter",
        "Requests answered, by the route that took them (_other: none), status code and method.",
    );
    let mut rows: Vec<(String, u16, &str, u64)> = metrics
        .requests
        .iter()
        .map(|e| {
            let (route, code, method) = e.key();
            (
                route.to_string(),
                *code,
                *method,
                e.value().load(Ordering::Relaxed),
            )
        })
        .collect();
    rows.sort();
    for (route, code, method, n) in rows {
        let _ = writeln!(
            out,
            "branchgate_requests_total{{host=\"{}\",code=\"{code}\",method=\"{method}\"}} {n}",
            escape(&route)
        );
    }

    header(
        &mut out,
        "branchgate_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response body.",
    );
    histogram(
        &mut out,
        "branchgate_request_duration_seconds",
        &BUCKETS,
        &metrics.buckets,
        &metrics.duration_sum_us,
    );

    header(
        &mut out,
        "branchgate_upstream_errors_total",
        "counter",
        "Answers branchgate made because no upstream could answer: bad_gateway (502), unavailable (503), timeout (504).",
    );
    for (i, kind) in ["bad_gateway", "unavailable", "timeout"].iter().enumerate() {
        let n = metrics.upstream_errors[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "branchgate_upstream_errors_total{{kind=\"{kind}\"}} {n}"
        );
    }

    header(
        &mut out,
        "branchgate_open_connections",
        "gauge",
        "Client connections open now.",
    );
    let (open, tls) = sources
        .conns
        .as_ref()
        .map_or((0, 0), |c| (c.open(), c.open_tls()));
    let http = open.saturating_sub(tls);
    let _ = writeln!(out, "branchgate_open_connections{{scheme=\"http\"}} {http}");
    let _ = writeln!(out, "branchgate_open_connections{{scheme=\"https\"}} {tls}");

    header(
        &mut out,
        "branchgate_route_table_updates_total",
        "counter",
        "Route tables published since start.",
    );
    let _ = writeln!(
        out,
        "branchgate_route_table_updates_total {}",
        snapshot.generation()
    );

    let stats = &sources.events.stats;
    header(
        &mut out,
        "branchgate_route_table_publish_duration_seconds",
        "histogram",
        "Time to build and publish one route table.",
    );
    histogram(
        &mut out,
        "branchgate_route_table_publish_duration_seconds",
        &PUBLISH_BUCKETS,
        &stats.publish_buckets,
        &stats.publish_sum_us,
    );

    header(
        &mut out,
        "branchgate_docker_events_total",
        "counter",
        "Container and network events received from the Docker engine.",
    );
    let n = stats.docker_events.load(Ordering::Relaxed);
    let _ = writeln!(out, "branchgate_docker_events_total {n}");
    header(
        &mut out,
        "branchgate_docker_reconnects_total",
        "counter",
        "Times the connection to the Docker engine was lost and retried.",
    );
    let n = stats.docker_reconnects.load(Ordering::Relaxed);
    let _ = writeln!(out, "branchgate_docker_reconnects_total {n}");

    header(
        &mut out,
        "branchgate_backend_up",
        "gauge",
        "1 when an upstream of a route answered its last connect, 0 when it failed lately.",
    );
    let mut backends: Vec<(String, String, u8)> = Vec::new();
    for pool in snapshot.pools() {
        for u in pool.upstreams() {
            backends.push((
                pool.key().route().to_string(),
                u.addr.to_string(),
                u8::from(!u.recently_failed()),
            ));
        }
    }
    backends.sort();
    for (route, addr, up) in backends {
        let _ = writeln!(
            out,
            "branchgate_backend_up{{host=\"{}\",upstream=\"{addr}\"}} {up}",
            escape(&route)
        );
    }

    if let Some(acme) = &sources.acme {
        header(
            &mut out,
            "branchgate_acme_orders_total",
            "counter",
            "ACME order attempts by result: issued, failed, budget (refused by --acme-max-orders-per-hour).",
        );
        for (result, n) in acme.orders() {
            let _ = writeln!(
                out,
                "branchgate_acme_orders_total{{result=\"{result}\"}} {n}"
            );
        }
    }

    header(
        &mut out,
        "branchgate_tls_certs_not_after",
        "gauge",
        "notAfter of every certificate in force, in seconds since the epoch, by name.",
    );
    let mut certs: Vec<(String, i64)> = Vec::new();
    if let Some(store) = &sources.certs {
        let set = store.load();
        for (_, c) in set.named().chain(set.fallback().map(|c| ("default", c))) {
            certs.extend(c.names.iter().map(|n| (n.to_string(), c.not_after)));
        }
    }
    if let Some(acme) = &sources.acme {
        for (name, c) in &acme.published().issued {
            certs.push((name.to_string(), c.not_after));
        }
    }
    certs.sort();
    certs.dedup_by(|a, b| a.0 == b.0);
    for (name, not_after) in certs {
        let _ = writeln!(
            out,
            "branchgate_tls_certs_not_after{{name=\"{}\"}} {not_after}",
            escape(&name)
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value in the exposition format: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A histogram's `_bucket` (cumulative), `_sum` and `_count` lines: `counts`
/// holds one count per bound, then the +Inf one; `sum_us` in microseconds.
fn histogram(
    out: &mut String,
    name: &str,
    bounds: &[f64],
    counts: &[AtomicU64],
    sum_us: &AtomicU64,
) {
    let les = bounds
        .iter()
        .map(ToString::to_string)
        .chain(["+Inf".to_owned()]);
    let mut cumulative = 0;
    for (le, count) in les.zip(counts) {
        cumulative += count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let sum = sum_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE").unwrap()),
            "OTHER"
        );
        assert_eq!(method_label(&Method::GET), "GET");
    }
}
