//! Test backend for branchgate's Docker tests: a tiny HTTP/1.1 echo server that
//! runs as PID 1 in a `FROM scratch` container.
//!
//! It has no dependencies beyond std so it builds with plain `rustc` into one
//! fully static binary (see `build_echo_image` in `scripts/docker-engine.sh`):
//!
//! ```text
//! rustc --edition 2021 -O -C target-feature=+crt-static tests/docker/echo.rs -o echo
//! ```
//!
//! (the script adds `-C strip=debuginfo`: 1.5 MB instead of 5.4 MB).
//!
//! Behaviour, which the Docker tests rely on:
//! - listens on `0.0.0.0` on every port in `ECHO_PORTS` (comma list, default `80`),
//!   one thread per connection, HTTP/1.1 keep-alive (1.0 only on request);
//! - a request body (Content-Length or chunked) is read and thrown away;
//! - every request is answered `200 text/plain` with the lines
//!   `container=`, `name=`, `port=`, `method=`, `path=` and one
//!   `header=<lowercased name>: <value>` per request header, so a test can see
//!   which container and port served it and what the proxy forwarded;
//! - `GET /healthy` creates `/healthy-flag`, `GET /unhealthy` removes it, and
//!   `echo check` exits 0 only while the flag exists: a Docker HEALTHCHECK
//!   a test can flip over HTTP. The image also installs this binary as
//!   `/bin/sh`, understanding only `sh -c "/echo check"`, so the shell form
//!   (`docker run --health-cmd "/echo check"`) works as well as the exec form
//!   (`["CMD", "/echo", "check"]`);
//! - SIGTERM and SIGINT exit at once (see `exit_on_term`).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;

/// The file whose presence `echo check` reports.
const FLAG: &str = "/healthy-flag";
/// Bounds that keep a broken client from growing a connection's memory.
const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().skip(1).map(String::as_str).collect::<Vec<_>>()[..] {
        ["check"] => check(),
        ["-c", command] => shell(command),
        _ => {}
    }
    exit_on_term();

    let ports = std::env::var("ECHO_PORTS").unwrap_or_else(|_| "80".to_string());
    let mut accept_loops = Vec::new();
    for port in ports.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port: u16 = port
            .parse()
            .unwrap_or_else(|_| fail(&format!("bad port {port:?} in ECHO_PORTS")));
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
        eprintln!("echo: listening on {addr}");
        accept_loops.push(thread::spawn(move || accept_loop(&listener, port)));
    }
    if accept_loops.is_empty() {
        fail("ECHO_PORTS names no port");
    }
    for handle in accept_loops {
        let _ = handle.join();
    }
}

/// `echo check`: the health check.
fn check() -> ! {
    std::process::exit(if Path::new(FLAG).exists() { 0 } else { 1 });
}

/// `sh -c COMMAND`, for the image's `/bin/sh`, which is this same binary.
/// `docker run --health-cmd "/echo check"` (and any `CMD-SHELL` health check)
/// runs `/bin/sh -c "/echo check"`, and a scratch image has no shell; this
/// understands that one command and refuses everything else.
fn shell(command: &str) -> ! {
    match command.split_whitespace().collect::<Vec<_>>()[..] {
        ["/echo" | "echo", "check"] => check(),
        _ => {
            eprintln!(
                "sh: this image has no shell; only \"/echo check\" is understood, not {command:?}"
            );
            std::process::exit(127);
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("echo: {msg}");
    std::process::exit(2);
}

/// As PID 1 in a container the kernel drops any signal that has no handler, so
/// without this `docker stop` would wait out its whole timeout and then SIGKILL.
/// std has no signal API, hence the two libc calls (libc is linked in by std
/// anyway). The handler only calls `_exit`, which is async-signal-safe; open
/// connections are simply cut, which is all a test backend needs.
fn exit_on_term() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn on_term(_signum: i32) {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { _exit(0) }
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // SAFETY: installs a handler that only calls an async-signal-safe function.
    unsafe {
        signal(SIGTERM, on_term);
        signal(SIGINT, on_term);
    }
}

fn accept_loop(listener: &TcpListener, port: u16) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || {
                    let _ = serve(stream, port);
                });
            }
            // A transient error (EMFILE, ECONNABORTED) must not stop the listener.
            Err(e) => eprintln!("echo: accept on port {port}: {e}"),
        }
    }
}

/// One parsed request head.
struct Request {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// HTTP/1.1 is persistent unless `Connection: close`; 1.0 only on `keep-alive`.
    fn keep_alive(&self) -> bool {
        if self.http10 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

/// Serves requests on one connection until the client closes it, asks to, or errs.
fn serve(stream: TcpStream, port: u16) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_head(&mut reader)? {
            Some(Ok(request)) => request,
            Some(Err(why)) => {
                let body = format!("bad request: {why}\n");
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                writer.write_all(head.as_bytes())?;
                writer.write_all(body.as_bytes())?;
                return Ok(());
            }
            None => return Ok(()),
        };
        if request.has_token("expect", "100-continue") {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        discard_body(&mut reader, &request)?;
        act_on_path(&request);
        let keep_alive = request.keep_alive();
        writer.write_all(&response(&request, port, keep_alive))?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads a request line and headers. `Ok(None)` is a clean close between
/// requests; `Ok(Some(Err(_)))` a malformed head that earns a 400.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Result<Request, &'static str>>> {
    let mut line = String::new();
    // RFC 9112 §2.2: ignore empty lines before the request line.
    loop {
        line.clear();
        if read_line(reader, &mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim_end_matches(['\r', '\n']).is_empty() {
            break;
        }
    }
    let mut parts = line.trim_end_matches(['\r', '\n']).split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Some(Err("malformed request line")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Ok(Some(Err("unsupported HTTP version"))),
    };
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        http10,
        headers: Vec::new(),
    };
    loop {
        line.clear();
        if read_line(reader, &mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            return Ok(Some(Ok(request)));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Ok(Some(Err("header without colon")));
        };
        if request.headers.len() == MAX_HEADERS {
            return Ok(Some(Err("too many headers")));
        }
        request
            .headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// `read_line` with a length bound; a longer line is an error, not a 400,
/// because the rest of it cannot be skipped reliably.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<usize> {
    let n = reader.take(MAX_LINE as u64 + 1).read_line(line)?;
    if n > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(n)
}

fn discard_body(reader: &mut impl BufRead, request: &Request) -> io::Result<()> {
    if request.has_token("transfer-encoding", "chunked") {
        let mut line = String::new();
        loop {
            line.clear();
            read_line(reader, &mut line)?;
            let size = line.trim_end().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line that ends the body.
                loop {
                    line.clear();
                    if read_line(reader, &mut line)? == 0 || line.trim_end().is_empty() {
                        return Ok(());
                    }
                }
            }
            skip(reader, size + 2)?; // the chunk and its CRLF
        }
    }
    match request.header("content-length").map(str::parse::<u64>) {
        Some(Ok(len)) => skip(reader, len),
        Some(Err(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad content-length",
        )),
        None => Ok(()),
    }
}

fn skip(reader: &mut impl BufRead, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// `/healthy` and `/unhealthy` flip the flag that `echo check` reports.
fn act_on_path(request: &Request) {
    if request.method != "GET" {
        return;
    }
    let path = request.target.split('?').next().unwrap_or("");
    // `/log/TEXT` prints a line for the log tests: stdout in green, and
    // `/log/stderr/TEXT` on stderr.
    if let Some(text) = path.strip_prefix("/log/") {
        match text.strip_prefix("stderr/") {
            Some(text) => eprintln!("echo: {text}"),
            None => println!("\x1b[32mecho:\x1b[0m {text}"),
        }
        return;
    }
    let result = match path {
        "/healthy" => std::fs::write(FLAG, b"ok\n"),
        "/unhealthy" => match std::fs::remove_file(FLAG) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        _ => return,
    };
    if let Err(e) = result {
        eprintln!("echo: {path}: {e}");
    }
}

fn container_name() -> String {
    match std::env::var("HOSTNAME") {
        Ok(name) if !name.is_empty() => name,
        _ => std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn response(request: &Request, port: u16, keep_alive: bool) -> Vec<u8> {
    let mut body = format!(
        "container={}\nname={}\nport={port}\nmethod={}\npath={}\n",
        container_name(),
        std::env::var("ECHO_NAME").unwrap_or_default(),
        request.method,
        request.target,
    );
    for (name, value) in &request.headers {
        let _ = writeln!(body, "header={name}: {value}");
    }
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        match (keep_alive, request.http10) {
            (false, _) => "Connection: close\r\n",
            (true, true) => "Connection: keep-alive\r\n",
            (true, false) => "",
        },
    )
    .into_bytes();
    // A HEAD response states the length but carries no body.
    if request.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
