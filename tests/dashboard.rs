//! The dashboard as a user sees it, in real headless Chromium driven over
//! WebDriver (Debian's `chromium` + `chromium-driver`), against the real
//! binary and a real Docker engine: log in with the token, see the matrix,
//! start a branch container and see it appear without a reload, open its
//! logs and see a line it prints after the page opened, see the request in
//! the live feed; and at a phone's width, nothing wider than the screen.
//! Screenshots go to `target/test-artifacts/`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::docker::{self, engine};
use support::webdriver::Driver;
use support::{ProxyProcess, get};

const TOKEN: &str = "s3cret-admin-token-0123";
/// Live updates arrive within this (the page reloads nothing).
const WAIT: Duration = Duration::from_secs(20);

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn branch(branch: &str, role: &str) -> Vec<String> {
    vec![
        "--label".into(),
        format!("branchgate.branch={branch}"),
        "--label".into(),
        format!("branchgate.role={role}"),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_watch_containers_logs_and_requests_live() {
    let Some(engine) = engine() else { return };
    let domain = format!("{}.test", docker::unique("dash"));
    let resolver = format!("--host-resolver-rules=MAP *.{domain} 127.0.0.1");
    let Some(browser) = Driver::start(&[resolver]).await else {
        support::skip_unless_ci(
            "dashboard browser test",
            "no chromium/chromedriver (Debian: apt-get install chromium chromium-driver)",
        );
        return;
    };
    let args = [
        "--docker",
        &engine.url,
        "--branch-domain",
        &domain,
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        TOKEN,
    ];
    let p = ProxyProcess::spawn("", &args).await;
    let admin = p.admin.unwrap();
    let dir = artifacts();
    let _be = engine.run("dash-be", &strs(&branch("main", "backend")));
    let _fe = engine.run("dash-fe-a", &strs(&branch("feature/A", "frontend")));

    // Log in: the dashboard sends the browser to the form first.
    browser.goto(&format!("http://{admin}/")).await;
    let login = browser.url().await;
    assert!(login.ends_with("/login"), "{login}");
    browser.find("#token").await.unwrap().send_keys(TOKEN).await;
    browser.find("#login").await.unwrap().click().await;
    browser
        .wait_for_text("#matrix-body", "feature-a", WAIT)
        .await
        .unwrap_or_else(|last| panic!("the matrix shows feature-a; saw {last:?}"));
    assert_eq!(browser.url().await, format!("http://{admin}/"));
    // Marks this page load: still there at the end means nothing reloaded.
    browser.execute("window.notReloaded = true;", vec![]).await;
    let link = browser
        .find(&format!("#matrix-body a[href*='feature-a.main.{domain}']"))
        .await
        .expect("the environment links to its host");
    assert!(link.text().await.contains("feature-a.main"));
    browser.screenshot(&dir.join("dashboard-matrix.png")).await;

    // A branch container started now appears by itself.
    let fe_b = engine.run("dash-fe-b", &strs(&branch("feature/B", "frontend")));
    browser
        .wait_for_text("#matrix-body", "feature-b", WAIT)
        .await
        .unwrap_or_else(|last| panic!("feature-b appears live; saw {last:?}"));
    browser
        .wait_for_text(
            "#events-list",
            &format!("container {} started", fe_b.name),
            WAIT,
        )
        .await
        .unwrap();

    // Its logs: opened from the page, then a line it prints afterwards.
    let input = browser.find("#logs-container").await.unwrap();
    input.clear().await;
    input.send_keys(&fe_b.name).await;
    browser.find("#logs-open").await.unwrap().click().await;
    browser
        .wait_for_text("#logs-state", "following", WAIT)
        .await
        .unwrap();
    let host = format!("feature-b.main.{domain}");
    support::until_status(&p, &host, "/", 200, WAIT).await;
    let r = get(p.addr, &host, "/log/printed-after-the-page-opened").await;
    assert_eq!(r.status, http::StatusCode::OK);
    browser
        .wait_for_text("#logs-output", "printed-after-the-page-opened", WAIT)
        .await
        .unwrap_or_else(|last| panic!("the log line arrives; saw {last:?}"));
    // The ANSI colour became a span, not escape codes.
    let raw = browser
        .execute(
            "return document.getElementById('logs-output').innerHTML;",
            vec![],
        )
        .await;
    let raw = raw.as_str().unwrap_or_default();
    assert!(!raw.contains('\u{1b}'), "{raw}");
    browser.screenshot(&dir.join("dashboard-logs.png")).await;

    // The request, in the live feed.
    browser
        .wait_for_text("#requests-list", "/log/printed-after-the-page-opened", WAIT)
        .await
        .unwrap_or_else(|last| panic!("the request appears in the feed; saw {last:?}"));
    browser
        .execute(
            "document.getElementById('requests').scrollIntoView();",
            vec![],
        )
        .await;
    browser
        .screenshot(&dir.join("dashboard-requests.png"))
        .await;

    // Stopping the container ends its log stream with a note.
    fe_b.stop();
    browser
        .wait_for_text("#logs-output", "stopped (exit code", WAIT)
        .await
        .unwrap();
    let same_page = browser
        .execute("return window.notReloaded === true;", vec![])
        .await;
    assert_eq!(
        same_page,
        serde_json::Value::Bool(true),
        "the page never reloaded"
    );
    browser.execute("window.scrollTo(0, 0);", vec![]).await;
    browser.screenshot(&dir.join("dashboard.png")).await;

    // On a phone: nothing wider than the screen, the matrix still there.
    browser.set_window_size(390, 844).await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().unwrap_or(i64::MAX) <= 0,
        "scrolls sideways by {overflow}px"
    );
    assert!(
        browser
            .text("#matrix-body")
            .await
            .unwrap()
            .contains("feature-a")
    );
    browser.screenshot(&dir.join("dashboard-phone.png")).await;
    browser.quit().await;
}
