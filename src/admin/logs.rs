//! Container logs (`/api/containers/{id}/logs?follow=1&tail=N`): the last
//! N lines, then, with `follow`, the lines as the container writes them,
//! stdout and stderr told apart, ending with an `end` message naming the
//! exit code when the container stops. The engine's stream is read only
//! while the page reads: the body owns it, so a page that goes away drops
//! it and its connection to the engine, which ends the follow there.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{InspectContainerOptions, LogsOptions};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde_json::json;

use super::sse;

/// Lines sent when `tail` is not given; the most it may be.
pub const DEFAULT_TAIL: u32 = 100;
/// The most lines `tail` may ask for.
pub const MAX_TAIL: u32 = 10_000;

/// What `?follow=1&tail=N` asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Query {
    /// Keep following after the last line.
    pub follow: bool,
    /// Lines from the end to start with.
    pub tail: u32,
}

impl Query {
    /// Reads the query string; a bad value is an error naming it.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut q = Query {
            follow: false,
            tail: DEFAULT_TAIL,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "follow" => q.follow = matches!(value, "" | "1" | "true"),
                "tail" => {
                    q.tail = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_TAIL)
                        .ok_or_else(|| {
                            format!("tail={value}: a number of lines up to {MAX_TAIL}")
                        })?;
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// A container id or name as the engine accepts it.
pub fn valid_id(id: &str) -> bool {
    id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The engine client for `url` (the same `--docker` address the provider uses).
pub fn connect(url: &str) -> Result<Docker, String> {
    Docker::connect_with_host(url).map_err(|e| e.to_string())
}

/// The log lines of `id` as SSE messages: `{"stream","line"}` per line,
/// then `end` (the container stopped, or no follow) or `error`.
pub fn stream(docker: Docker, id: String, q: &Query) -> impl Stream<Item = Bytes> + Send + 'static {
    let options = LogsOptions {
        follow: q.follow,
        stdout: true,
        stderr: true,
        tail: q.tail.to_string(),
        ..Default::default()
    };
    let lines = docker.logs(&id, Some(options));
    let follow = q.follow;
    let tail = futures_util::stream::once(async move {
        let (event, message) = match docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Err(e) => ("error", format!("container {id}: {e}")),
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                let name = c
                    .name
                    .as_deref()
                    .unwrap_or(&id)
                    .trim_start_matches('/')
                    .to_owned();
                match (state.running, state.exit_code) {
                    (Some(true), _) if follow => ("end", format!("the log stream of {name} ended")),
                    (Some(true), _) => (
                        "end",
                        format!("end of the last lines of {name} (not following)"),
                    ),
                    (_, Some(code)) => (
                        "end",
                        format!("container {name} stopped (exit code {code})"),
                    ),
                    _ => ("end", format!("container {name} stopped")),
                }
            }
        };
        sse::message(Some(event), &json!({ "message": message }).to_string())
    });
    // An error ends the engine's stream: say it once; the closing inspect
    // then says what became of the container.
    lines
        .scan(false, |failed, item| {
            let next = match (*failed, item) {
                (true, _) => None,
                (false, Ok(output)) => Some(line(&output)),
                (false, Err(e)) => {
                    *failed = true;
                    let message = json!({ "message": e.to_string() }).to_string();
                    Some(sse::message(Some("error"), &message))
                }
            };
            std::future::ready(next)
        })
        .chain(tail)
}

/// One log output as a message (a trailing newline dropped).
fn line(output: &LogOutput) -> Bytes {
    let (stream, bytes) = match output {
        LogOutput::StdErr { message } => ("stderr", message),
        LogOutput::StdOut { message } => ("stdout", message),
        LogOutput::Console { message } => ("console", message),
        LogOutput::StdIn { message } => ("stdin", message),
    };
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    sse::message(None, &json!({ "stream": stream, "line": text }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_and_checked() {
        assert_eq!(
            Query::parse(Some("follow=1&tail=5")),
            Ok(Query {
                follow: true,
                tail: 5
            })
        );
        assert_eq!(
            Query::parse(None),
            Ok(Query {
                follow: false,
                tail: DEFAULT_TAIL
            })
        );
        assert!(Query::parse(Some("tail=x")).unwrap_err().contains("tail=x"));
        assert!(Query::parse(Some("tail=99999")).is_err());
    }

    #[test]
    fn ids_are_names_the_engine_accepts() {
        assert!(valid_id("app-fe1_2.x"));
        assert!(!valid_id("../etc"));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(""));
    }

    #[test]
    fn a_line_keeps_its_stream_and_drops_its_newline() {
        let out = LogOutput::StdErr {
            message: Bytes::from_static(b"\x1b[31mred\x1b[0m\n"),
        };
        let msg = String::from_utf8(line(&out).to_vec()).unwrap();
        assert_eq!(
            msg,
            "data: {\"line\":\"\\u001b[31mred\\u001b[0m\",\"stream\":\"stderr\"}\n\n"
        );
    }
}
