//! Tried as a new user would, in real headless Chromium: a frontend branch's
//! page calls `/api/...` with `fetch` on its own origin and shows the backend
//! branch's answer, and the environment matrix's links lead to working
//! environments. `--host-resolver-rules` maps `*.foo.test` to the proxy on
//! 127.0.0.1. Screenshots go to `target/test-artifacts/`. Without Chromium the
//! test fails under `CI=true` (scripts/test.sh installs it) and is skipped
//! loudly otherwise.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use support::{Backend, Proxy};

/// A frontend: every request gets a page whose script fetches `/api/hello`
/// from its own origin and writes the JSON answer's backend name and URI.
fn frontend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = format!(
                "<!doctype html><html><head><title>{name}</title></head><body>\
                 <h1>frontend {name}</h1><p id=\"out\">waiting for the API</p>\
                 <p id=\"ctx\"></p><script>document.getElementById('ctx').textContent = \
                 'context: ' + location.protocol + (window.isSecureContext ? ' secure' : ' not secure');\
                 fetch('/api/hello', {{credentials: 'same-origin'}})\
                 .then(r => r.json())\
                 .then(j => {{ document.getElementById('out').textContent = \
                 'api answered: ' + j.backend + ' ' + j.uri; }})\
                 .catch(e => {{ document.getElementById('out').textContent = 'api failed: ' + e; }});\
                 </script></body></html>"
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn member(branch: &str, role: &str, upstream: SocketAddr) -> String {
    format!("[[route]]\nbranch = {branch:?}\nrole = \"{role}\"\nupstreams = [\"{upstream}\"]\n")
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `extra` flags; returns stdout.
fn browse(bin: &str, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP *.foo.test 127.0.0.1, MAP foo.test 127.0.0.1",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM after the page's scripts ran (off the async threads: Chromium takes seconds).
async fn dump_dom(bin: &'static str, url: &str) -> String {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || browse(bin, &url, &["--dump-dom".into()]))
        .await
        .unwrap()
}

/// Saves a screenshot of `url` and checks it is an image of some size.
async fn screenshot(bin: &'static str, url: &str, path: &std::path::Path) {
    let args = [
        format!("--screenshot={}", path.display()),
        "--window-size=900,500".into(),
    ];
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || browse(bin, &url, &args))
        .await
        .unwrap();
    assert!(
        std::fs::metadata(path).unwrap().len() > 1000,
        "{}",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_uses_the_same_origin_api_and_the_matrix_links() {
    let Some(bin) = chromium() else {
        support::skip_unless_ci(
            "browser test",
            "no chromium (Debian: apt-get install chromium)",
        );
        return;
    };
    let be_main = Backend::spawn("be-main").await;
    let be_pay = Backend::spawn("be-payments").await;
    let p = Proxy::builder()
        .toml(&member("feature/Login", "frontend", frontend("login")))
        .toml(&member("main", "frontend", frontend("main")))
        .toml(&member("main", "backend", be_main.addr))
        .toml(&member("payments", "backend", be_pay.addr))
        .arg("--branch-domain")
        .arg("foo.test")
        .spawn()
        .await;
    let port = p.addr.port();
    let dir = artifacts();

    // The page's script reached the backend branch over its own origin.
    let url = format!("http://feature-login.payments.foo.test:{port}/");
    let dom = dump_dom(bin, &url).await;
    assert!(dom.contains("frontend login"), "{dom}");
    assert!(
        dom.contains("api answered: be-payments /api/hello"),
        "{dom}"
    );
    screenshot(bin, &url, &dir.join("branch-environment.png")).await;

    // The matrix page, then every link on it.
    let matrix_url = format!("http://foo.test:{port}/");
    let matrix = dump_dom(bin, &matrix_url).await;
    screenshot(bin, &matrix_url, &dir.join("environment-matrix.png")).await;
    let links: Vec<String> = matrix
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|l| format!("http:{l}"))
        .collect();
    assert_eq!(links.len(), 4, "{matrix}");
    for link in links {
        let want_fe = if link.contains("//feature-login.") {
            "login"
        } else {
            "main"
        };
        let want_be = if link.contains(".payments.") {
            "be-payments"
        } else {
            "be-main"
        };
        let dom = dump_dom(bin, &link).await;
        assert!(
            dom.contains(&format!("frontend {want_fe}")),
            "{link}: {dom}"
        );
        assert!(
            dom.contains(&format!("api answered: {want_be} /api/hello")),
            "{link}: {dom}"
        );
    }
}

/// Over HTTPS with certificates from a `--certs` directory: the plain-HTTP
/// URL is redirected, the page is a secure context (what service workers,
/// `Secure` cookies and OAuth redirects need), and its same-origin API call
/// works. Chromium trusts the test certificate by its key's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_a_secure_context_over_https() {
    use support::tls::{Ca, Key};
    let Some(bin) = chromium() else {
        support::skip_unless_ci(
            "browser test",
            "no chromium (Debian: apt-get install chromium)",
        );
        return;
    };
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    // One wildcard per backend branch: `*.foo.test` cannot cover `fe.be.foo.test`.
    let issued = ca.issue("payments", &["*.payments.foo.test"], Key::Ec);
    issued.write(certs.path(), "payments.foo.test");
    let be_pay = Backend::spawn("be-payments").await;
    let p = Proxy::builder()
        .toml(&member("feature/Login", "frontend", frontend("login")))
        .toml(&member("payments", "backend", be_pay.addr))
        .arg("--branch-domain")
        .arg("foo.test")
        .arg("--https")
        .arg("127.0.0.1:0")
        .arg("--certs")
        .arg(certs.path().to_str().unwrap())
        .spawn()
        .await;
    let http = p.addr.port();
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        issued.spki_sha256_base64()
    );
    let dom = tokio::task::spawn_blocking(move || {
        let url = format!("http://feature-login.payments.foo.test:{http}/");
        browse(bin, &url, &["--dump-dom".into(), trust])
    })
    .await
    .unwrap();
    assert!(dom.contains("frontend login"), "{dom}");
    assert!(dom.contains("context: https: secure"), "{dom}");
    assert!(
        dom.contains("api answered: be-payments /api/hello"),
        "{dom}"
    );
}
