//! The branch gate as a user meets it, in real headless Chromium over
//! WebDriver: the first environment sends the browser to the login form,
//! one login, and a second environment (another frontend with another
//! backend) opens without a second prompt; the upstreams never see the
//! gate's cookie. A screenshot of the form goes to `target/test-artifacts/`.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use support::webdriver::Driver;
use support::{Backend, Proxy};

const WAIT: Duration = Duration::from_secs(20);

fn member(branch: &str, role: &str, upstream: SocketAddr) -> String {
    format!("[[route]]\nbranch = {branch:?}\nrole = \"{role}\"\nupstreams = [\"{upstream}\"]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_once_and_open_another_environment_without_a_prompt() {
    let Some(browser) =
        Driver::start(&["--host-resolver-rules=MAP *.gate.test 127.0.0.1".into()]).await
    else {
        support::skip_unless_ci(
            "branch gate browser test",
            "no chromium/chromedriver (Debian: apt-get install chromium chromium-driver)",
        );
        return;
    };
    let fe1 = Backend::spawn("fe-login").await;
    let fe2 = Backend::spawn("fe-checkout").await;
    let be1 = Backend::spawn("be-main").await;
    let be2 = Backend::spawn("be-payments").await;
    let users = tempfile::NamedTempFile::new().unwrap();
    // htpasswd -nbB -C 5 ann secret
    std::fs::write(
        users.path(),
        "ann:$2y$05$kAxGq3hjeP.Swx9/F7SdK.v/NkkEnjfNxUOvN7nkTTsRZuH5tpvlK\n",
    )
    .unwrap();
    let p = Proxy::builder()
        .toml(&member("login", "frontend", fe1.addr))
        .toml(&member("checkout", "frontend", fe2.addr))
        .toml(&member("main", "backend", be1.addr))
        .toml(&member("payments", "backend", be2.addr))
        .arg("--branch-domain")
        .arg("gate.test")
        .arg("--branch-auth")
        .arg(users.path().to_str().unwrap())
        .spawn()
        .await;
    let port = p.addr.port();

    browser
        .goto(&format!("http://login.main.gate.test:{port}/app?tab=2"))
        .await;
    let url = browser.url().await;
    assert!(
        url.contains("/.branchgate/login?next=/app%3Ftab%3D2"),
        "{url}"
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    browser.screenshot(&dir.join("gate-login.png")).await;
    browser.find("#user").await.unwrap().send_keys("ann").await;
    browser
        .find("#password")
        .await
        .unwrap()
        .send_keys("secret")
        .await;
    browser.find("#login").await.unwrap().click().await;
    browser
        .wait_for_text("body", "fe-login", WAIT)
        .await
        .unwrap_or_else(|last| panic!("back on the environment after the login; saw {last:?}"));
    assert_eq!(
        browser.url().await,
        format!("http://login.main.gate.test:{port}/app?tab=2")
    );

    // Another frontend with another backend: no prompt.
    browser
        .goto(&format!("http://checkout.payments.gate.test:{port}/"))
        .await;
    browser
        .wait_for_text("body", "fe-checkout", WAIT)
        .await
        .unwrap_or_else(|last| panic!("the second environment opens at once; saw {last:?}"));
    assert!(!browser.url().await.contains(".branchgate"));
    // Its API goes to its backend branch, same origin, same login.
    let api = browser
        .execute(
            "const x = new XMLHttpRequest(); x.open('GET', '/api/orders', false); x.send(); \
             return [x.status, x.getResponseHeader('x-backend'), x.responseText];",
            vec![],
        )
        .await;
    assert_eq!(api[0], 200, "{api}");
    assert_eq!(api[1], "be-payments");
    let seen = api[2].as_str().unwrap_or_default();
    assert!(
        !seen.contains("branchgate_gate"),
        "the gate's cookie stays at the gate: {seen}"
    );
    browser.quit().await;
}
