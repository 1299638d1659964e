//! The live request feed (`/api/requests`): every completed request's
//! record, as ngrok's inspector shows it (method, path, status, duration,
//! upstream, the request headers with credentials hidden), sent to the
//! pages watching. A [`Sink`] in front of the others; while nobody
//! watches it costs one atomic load per request, and a page that reads
//! too slowly misses entries rather than holding memory (the channel keeps
//! the last [`BUFFER`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast;

use super::sse;
use crate::proxy::record::{RequestRecord, Sink};

/// Entries a watcher may fall behind by before it misses some.
pub const BUFFER: usize = 256;

/// One completed request, rendered once for every watcher.
#[derive(Debug)]
struct Entry {
    /// Lower case, without a port: what `?host=` is compared with.
    host: Box<str>,
    /// The SSE message.
    message: Bytes,
}

/// The feed: a sink and the watchers' channel.
#[derive(Debug)]
pub struct Feed {
    tx: broadcast::Sender<Arc<Entry>>,
    watchers: Arc<AtomicUsize>,
    next: Box<dyn Sink>,
}

impl Feed {
    /// A feed in front of `next`.
    pub fn new(next: Box<dyn Sink>) -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
            watchers: Arc::new(AtomicUsize::new(0)),
            next,
        }
    }

    /// The requests completed from now on, for `host` (any host when
    /// `None`), as SSE messages.
    pub fn watch(&self, host: Option<String>) -> impl Stream<Item = Bytes> + Send + 'static {
        let host = host.map(|h| normalize(&h).into_owned());
        let rx = self.tx.subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        let guard = Watching(self.watchers.clone());
        futures_util::stream::unfold((rx, guard), move |(mut rx, guard)| {
            let host = host.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(e) if host.as_deref().is_none_or(|h| *h == *e.host) => {
                            return Some((e.message.clone(), (rx, guard)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let note = json!({ "missed": n }).to_string();
                            return Some((sse::message(Some("missed"), &note), (rx, guard)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
    }

    fn send(&self, r: &RequestRecord) {
        let host = normalize(r.host().unwrap_or(""));
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let headers: Vec<(&str, &str)> = (r.headers.iter().flatten())
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("(not text)")))
            .collect();
        let data = json!({
            "at_ms": at_ms,
            "client": r.client.to_string(),
            "method": r.method.as_str(),
            "host": &*host,
            "path": r.path(),
            "status": r.status.as_u16(),
            "duration_ms": r.duration.as_secs_f64() * 1000.0,
            "upstream": r.upstream.map(|u| u.to_string()),
            "route": r.route(),
            "bytes": r.bytes,
            "complete": r.complete,
            "headers": headers,
        });
        let entry = Entry {
            message: sse::message(None, &data.to_string()),
            host: host.into(),
        };
        let _ = self.tx.send(Arc::new(entry));
    }
}

impl Sink for Feed {
    fn record(&self, record: &RequestRecord) {
        if self.watchers.load(Ordering::Relaxed) > 0 {
            self.send(record);
        }
        self.next.record(record);
    }

    fn wants_headers(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0 || self.next.wants_headers()
    }
}

/// Counts a watcher while its stream lives.
#[derive(Debug)]
struct Watching(Arc<AtomicUsize>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lower case, port removed (`[::1]:8080` → `[::1]`).
fn normalize(host: &str) -> std::borrow::Cow<'_, str> {
    let bare = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    match bare.bytes().any(|b| b.is_ascii_uppercase()) {
        true => bare.to_ascii_lowercase().into(),
        false => bare.into(),
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use http::Request;

    use super::*;
    use crate::proxy::record::{Discard, shown_headers};

    fn record(host: &str) -> RequestRecord {
        let req = Request::get("/x?y=1")
            .header("host", host)
            .header("authorization", "Bearer secret")
            .body(())
            .unwrap();
        let mut r = RequestRecord::start(&req, [10, 0, 0, 1].into());
        r.headers = Some(shown_headers(req.headers()));
        r.complete(3, true);
        r
    }

    #[tokio::test]
    async fn watchers_get_their_hosts_requests_with_credentials_hidden() {
        let feed = Feed::new(Box::new(Discard));
        assert!(!feed.wants_headers());
        let mut all = Box::pin(feed.watch(None));
        let mut one = Box::pin(feed.watch(Some("B.foo.bar".into())));
        assert!(feed.wants_headers());
        feed.record(&record("a.foo.bar"));
        feed.record(&record("b.foo.bar:8080"));
        let first = String::from_utf8(all.next().await.unwrap().to_vec()).unwrap();
        assert!(first.contains("\"host\":\"a.foo.bar\""), "{first}");
        assert!(
            first.contains("[\"authorization\",\"[hidden]\"]"),
            "{first}"
        );
        assert!(!first.contains("secret"), "{first}");
        let mine = String::from_utf8(one.next().await.unwrap().to_vec()).unwrap();
        assert!(mine.contains("\"host\":\"b.foo.bar\""), "{mine}");
        drop((all, one));
        assert!(!feed.wants_headers());
    }

    #[test]
    fn hosts_are_compared_without_port_and_case() {
        assert_eq!(normalize("A.Foo:8080"), "a.foo");
        assert_eq!(normalize("[::1]:8080"), "[::1]");
        assert_eq!(normalize("[::1]"), "[::1]");
    }
}
