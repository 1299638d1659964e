//! Server-sent events: the admin's live views (`/api/events`,
//! `/api/requests`, container logs) are `text/event-stream` bodies, one
//! `data:` line of JSON per message, with a comment every
//! [`KEEP_ALIVE`] so proxies keep the stream open and a page that went
//! away is noticed by a failed write even when nothing happens.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::{HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};

/// Every admin response's body: whole, or a stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A comment line sent when nothing else was.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// One message: `event: NAME` (unless the default `message`), then the
/// data, one `data:` line per line of it.
pub fn message(event: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 16);
    if let Some(name) = event {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// A `text/event-stream` response sending `messages` (already framed by
/// [`message`]) with keep-alive comments between; it ends when `messages`
/// does. Dropping the body (the client went away) drops `messages`.
pub fn response<S>(messages: S) -> Response<Body>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let frames = futures_util::stream::unfold(
        (Box::pin(messages), tick),
        |(mut messages, mut tick)| async move {
            let bytes = tokio::select! {
                next = messages.next() => next?,
                _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok::<_, Infallible>(Frame::data(bytes)), (messages, tick)))
        },
    );
    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx in front of the admin would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Whether the client asked for a stream (`Accept: text/event-stream`, as
/// `EventSource` sends).
pub fn wanted(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_framed_line_by_line() {
        assert_eq!(&message(None, "{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(
            &message(Some("end"), "one\ntwo")[..],
            b"event: end\ndata: one\ndata: two\n\n"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_when_its_messages_do() {
        let messages = futures_util::stream::iter([message(None, "1"), message(None, "2")]);
        let body = response(messages).into_body().collect().await.unwrap();
        assert_eq!(&body.to_bytes()[..], b"data: 1\n\ndata: 2\n\n");
    }
}
