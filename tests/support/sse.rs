//! A server-sent-events reader for tests: one connection, its messages
//! collected as they arrive; dropping it closes the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Empty};
use tokio::task::JoinHandle;

/// One message: its `event:` name (`message` by default) and its data.
#[derive(Debug, Clone)]
pub struct Message {
    /// `event:`, or `message`.
    pub event: String,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

impl Message {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.data))
    }
}

/// An open event stream.
pub struct Sse {
    messages: Arc<Mutex<Vec<Message>>>,
    ended: Arc<Mutex<bool>>,
    task: JoinHandle<()>,
}

impl Sse {
    /// GETs `path` on `addr` with `headers` (`Accept: text/event-stream`
    /// added); panics unless the answer is 200 with an event stream.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut sender = super::client::sender::<Empty<Bytes>>(addr).await;
        let mut req = Request::get(path)
            .header("host", "admin")
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{path}: {kind}");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(false));
        let (m, e) = (messages.clone(), ended.clone());
        let task = tokio::spawn(async move {
            // The sender owns the connection: keep it for the stream's life.
            let _sender = sender;
            let mut body = resp.into_body();
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if let Some(msg) = parse(&block) {
                        m.lock().unwrap().push(msg);
                    }
                }
            }
            *e.lock().unwrap() = true;
        });
        Sse {
            messages,
            ended,
            task,
        }
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Whether the server ended the stream.
    pub fn ended(&self) -> bool {
        *self.ended.lock().unwrap()
    }

    /// Waits for a message `pred` accepts.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        super::eventually(limit, what, || {
            let found = self.messages().into_iter().find(|m| pred(m));
            async move { found }
        })
        .await
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One block of `field: value` lines; comments (`:`) alone are no message.
fn parse(block: &str) -> Option<Message> {
    let mut event = "message".to_owned();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (!data.is_empty()).then(|| Message {
        event,
        data: data.join("\n"),
    })
}
