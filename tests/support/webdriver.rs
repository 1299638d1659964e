//! A small W3C WebDriver client for browser tests: starts Debian's
//! `chromedriver` on a free loopback port, opens one headless Chromium session
//! with a fresh profile, and drives it over JSON-on-HTTP/1.1 (navigate, find by
//! CSS selector, click, type, read text, run JavaScript, take screenshots).
//!
//! It speaks only the handful of endpoints these tests use, and panics with the
//! driver's own error where a test could do nothing but fail; calls a test may
//! want to retry (`find`, `text`, `wait_for_text`) return `Result`.
//! [`Driver::start`] returns `None` when Chromium or chromedriver is not
//! installed, so the caller decides between skipping and failing.
// Each test binary uses a different part of this; unused items are expected.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The key under which W3C WebDriver carries an element reference (the
/// spec's "web element identifier"; note the final `cecf`).
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take before the test fails instead of hanging.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to answer `GET /status` with `ready`.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// One WebDriver session: the HTTP client and the session's URL prefix.
#[derive(Debug)]
struct Session {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// `/session/ID`, or "" before a session exists.
    path: String,
}

impl Session {
    /// Talks to chromedriver on `port`, with no session yet.
    fn server(port: u16) -> Self {
        Session {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://127.0.0.1:{port}"),
            path: String::new(),
        }
    }

    /// Sends one command (`path` is relative to the server root) and returns
    /// the response's `value`, or the driver's error as "METHOD PATH: code: message".
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let what = format!("{method} {path}");
        // chromedriver rejects a POST without a JSON object body.
        let body = match (body, method == Method::POST) {
            (Some(v), _) => Bytes::from(v.to_string()),
            (None, true) => Bytes::from_static(b"{}"),
            (None, false) => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(body))
            .expect("a valid WebDriver request");
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body.to_bytes()))
        };
        let (status, bytes) = tokio::time::timeout(COMMAND_LIMIT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {COMMAND_LIMIT:?}")))
            .map_err(|e| format!("{what}: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{what}: {status}, not JSON ({e}): {text}"))?;
        let value = v["value"].take();
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error"].as_str().unwrap_or("unknown error");
        // chromedriver repeats the code first and appends "(Session info: …)".
        let message = value["message"].as_str().unwrap_or_default();
        let message = message.strip_prefix(code).unwrap_or(message);
        let message = message
            .split("\n  (Session info:")
            .next()
            .unwrap_or_default();
        let message = match message.trim_start_matches(": ") {
            "" => String::new(),
            m => format!(": {m}"),
        };
        Err(format!("{what}: {code}{message} ({status})"))
    }

    /// A command on this session (`rel` is after `/session/ID`).
    async fn cmd(&self, method: Method, rel: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("{}{rel}", self.path), body)
            .await
    }

    /// A command whose failure can only fail the test.
    async fn must(&self, method: Method, rel: &str, body: Option<Value>) -> Value {
        self.cmd(method, rel, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {e}"))
    }

    fn element(self: &Arc<Self>, reference: &Value) -> Element {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("webdriver: not an element reference: {reference}"));
        Element {
            session: Arc::clone(self),
            id: id.to_owned(),
        }
    }
}

/// A headless Chromium driven through its own chromedriver process.
///
/// Call [`Driver::quit`] at the end of a test. If the driver is dropped
/// instead (a failed assertion unwinding, an early return), `Drop` still
/// ends the session with a blocking `DELETE /session/ID` (bounded to a few
/// seconds) so Chromium exits, and then chromedriver is killed
/// (`kill_on_drop`); the profile directory is removed last.
#[derive(Debug)]
pub struct Driver {
    session: Arc<Session>,
    port: u16,
    /// Set once the session was ended, so `Drop` does not end it twice.
    ended: bool,
    chromedriver: Child,
    /// Holds `profile/` (Chromium's `--user-data-dir`) and `chromedriver.log`.
    dir: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// session (fresh profile, 1280x1600 window) with `extra_args` appended
    /// to Chromium's flags, e.g. `"--host-resolver-rules=MAP *.foo.test 127.0.0.1"`.
    ///
    /// Returns `None` if `chromium` or `chromedriver` is not on `PATH`; panics,
    /// printing chromedriver's log, if they are but will not start.
    pub async fn start(extra_args: &[String]) -> Option<Driver> {
        let browser = on_path(&["chromium", "chromium-browser"])?;
        let chromedriver = on_path(&["chromedriver"])?;
        let dir = tempfile::tempdir().expect("a temp dir for the browser profile");
        let log_path = dir.path().join("chromedriver.log");
        // The port is free when picked but could be taken before chromedriver
        // binds it; a few attempts make that race harmless.
        let mut attempt = 0;
        let (child, port) = loop {
            attempt += 1;
            let port = super::free_port();
            let log = std::fs::File::create(&log_path).expect("chromedriver.log");
            let mut child = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("chromedriver.log"))
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", chromedriver.display()));
            match wait_ready(&mut child, port).await {
                Ok(()) => break (child, port),
                Err(why) if attempt < 3 => {
                    eprintln!("chromedriver on port {port}: {why}; retrying");
                }
                Err(why) => panic!(
                    "chromedriver on port {port}: {why}\n{}",
                    read_log(&log_path)
                ),
            }
        };
        let profile = dir.path().join("profile");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1600",
        ]
        .map(String::from)
        .into();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra_args.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args},
        }}});
        let server = Session::server(port);
        let created = match server.call(Method::POST, "/session", Some(caps)).await {
            Ok(v) => v,
            Err(e) => panic!("webdriver new session: {e}\n{}", read_log(&log_path)),
        };
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("webdriver new session: no sessionId in {created}"));
        let session = Session {
            path: format!("/session/{id}"),
            ..server
        };
        Some(Driver {
            session: Arc::new(session),
            port,
            ended: false,
            chromedriver: child,
            dir,
        })
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.session
            .must(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        let v = self.session.must(Method::GET, "/url", None).await;
        v.as_str().expect("the URL is a string").to_owned()
    }

    /// The first element matching the CSS selector; `Err` if there is none.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let by = json!({"using": "css selector", "value": css});
        match self.session.cmd(Method::POST, "/element", Some(by)).await {
            Ok(v) => Ok(self.session.element(&v)),
            Err(e) => Err(format!("{css:?}: {e}")),
        }
    }

    /// Every element matching the CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let by = json!({"using": "css selector", "value": css});
        let v = self.session.must(Method::POST, "/elements", Some(by)).await;
        let refs = v.as_array().expect("find elements answers an array");
        refs.iter().map(|r| self.session.element(r)).collect()
    }

    /// The rendered text of the first element matching `css`, as
    /// [`Element::text`]; `Err` if there is none or it went stale.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let el = self.find(css).await?;
        el.try_text().await.map_err(|e| format!("{css:?}: {e}"))
    }

    /// Polls every 100 ms until the text of `css` contains `needle` and
    /// returns that text; after `timeout`, `Err` says what was seen last.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.text(css).await {
                Ok(t) if t.contains(needle) => return Ok(t),
                Ok(t) => format!("text {t:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{css:?} did not contain {needle:?} within {timeout:?}; last: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` as a function body in the page (`arguments[i]` are
    /// `args`; pass an element with [`Element::reference`]) and returns what
    /// it `return`s, as JSON.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({"script": script, "args": args});
        self.session
            .must(Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Saves a PNG screenshot of the viewport to `path`, creating parent directories.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.session.must(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a screenshot is a base64 string"))
            .expect("a screenshot is valid base64");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Resizes the browser window (CSS pixels), e.g. to a phone's width.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.session
            .must(Method::POST, "/window/rect", Some(rect))
            .await;
    }

    /// chromedriver's output so far (for a failure message).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("chromedriver.log"))
    }

    /// Ends the session (Chromium exits), then chromedriver is killed.
    pub async fn quit(mut self) {
        self.ended = true;
        if let Err(e) = self.session.cmd(Method::DELETE, "", None).await {
            eprintln!("webdriver quit: {e}");
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.ended {
            // Killing chromedriver alone could leave Chromium running, so end
            // the session first; Drop cannot await, hence a blocking exchange.
            if let Err(e) = delete_blocking(self.port, &self.session.path) {
                eprintln!("webdriver: ending the session on drop: {e}");
            }
        }
    }
}

/// An element of the current page; stale once the page replaces it.
#[derive(Debug, Clone)]
pub struct Element {
    session: Arc<Session>,
    id: String,
}

impl Element {
    /// Clicks the element's centre (scrolling it into view first).
    pub async fn click(&self) {
        self.session
            .must(Method::POST, &self.rel("/click"), None)
            .await;
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) {
        let body = json!({"text": text});
        self.session
            .must(Method::POST, &self.rel("/value"), Some(body))
            .await;
    }

    /// Empties an input or textarea.
    pub async fn clear(&self) {
        self.session
            .must(Method::POST, &self.rel("/clear"), None)
            .await;
    }

    /// The element's rendered text, as `innerText` shows it (hidden parts left out).
    pub async fn text(&self) -> String {
        self.try_text()
            .await
            .unwrap_or_else(|e| panic!("webdriver {e}"))
    }

    /// The attribute as written in the markup (`None` if absent). An input's
    /// `value` attribute does not follow typing: use [`Element::prop`] for that.
    pub async fn attr(&self, name: &str) -> Option<String> {
        let rel = self.rel(&format!("/attribute/{name}"));
        as_text(self.session.must(Method::GET, &rel, None).await)
    }

    /// The live DOM property (`value`, `checked`, `href` resolved, …),
    /// non-string values as JSON text; `None` if undefined or null.
    pub async fn prop(&self, name: &str) -> Option<String> {
        let rel = self.rel(&format!("/property/{name}"));
        as_text(self.session.must(Method::GET, &rel, None).await)
    }

    /// The element as a script argument for [`Driver::execute`].
    pub fn reference(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    async fn try_text(&self) -> Result<String, String> {
        let v = self
            .session
            .cmd(Method::GET, &self.rel("/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    fn rel(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }
}

fn as_text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// The first of `names` found in a `PATH` directory.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Polls `GET /status` until chromedriver says it is ready; `Err` if it exits
/// or stays unready for [`READY_LIMIT`].
async fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let server = Session::server(port);
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}"));
        }
        let last = match server.call(Method::GET, "/status", None).await {
            Ok(v) if v["ready"] == true => return Ok(()),
            Ok(v) => format!("not ready: {v}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready within {READY_LIMIT:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `DELETE path` on chromedriver without a runtime (for `Drop`).
fn delete_blocking(port: u16, path: &str) -> std::io::Result<()> {
    let limit = Some(Duration::from_secs(5));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(limit)?;
    s.set_write_timeout(limit)?;
    write!(
        s,
        "DELETE {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    // The answer comes once Chromium has quit; its content does not matter.
    let mut head = [0u8; 512];
    let _ = s.read(&mut head)?;
    Ok(())
}

fn read_log(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => format!("chromedriver log ({}):\n{log}", path.display()),
        Err(e) => format!("no chromedriver log at {}: {e}", path.display()),
    }
}
