//! Every answer branchgate renders, in HTML and in JSON, without sockets.

use std::time::Duration;

use super::*;
use crate::routes::{BranchSettings, BuildOptions, Policy, Proto, RouteSpec, build};
use crate::upstream::{ConnectError, RequestBodyError, UpstreamError};

async fn every_error() -> Vec<(ProxyError, u16, bool)> {
    let addr = "127.0.0.1:1".parse().unwrap();
    let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    vec![
        (ProxyError::BadHost, 400, true),
        (ProxyError::DuplicateHost, 400, true),
        (ProxyError::BadScheme, 400, true),
        (ProxyError::UriTooLong, 414, true),
        (ProxyError::DotSegments, 400, false),
        (
            ProxyError::ClientBodyTimeout(Duration::from_secs(1)),
            408,
            true,
        ),
        (
            ProxyError::ClientBody(RequestBodyError::Trailers),
            400,
            true,
        ),
        (ProxyError::UnexpectedUpgrade, 502, false),
        (ProxyError::NoHost, 503, false),
        (ProxyError::NoPath, 404, false),
        (ProxyError::NoUpstream, 503, false),
        (
            ProxyError::Connect(ConnectError::Io { addr, source: io() }),
            502,
            false,
        ),
        (ProxyError::Connect(ConnectError::Timeout(addr)), 504, false),
        (
            ProxyError::Connect(ConnectError::Tls { addr, source: io() }),
            502,
            false,
        ),
        (
            ProxyError::UpstreamNotReading(Duration::from_secs(1)),
            504,
            false,
        ),
        (
            ProxyError::ResponseTimeout(Duration::from_secs(1)),
            504,
            false,
        ),
        (ProxyError::Upstream(UpstreamError::Closed), 502, false),
        (ProxyError::Rewrite, 500, false),
    ]
}

#[tokio::test]
async fn every_error_renders_in_html_and_json() {
    // ProxyError is not Clone: a fresh list per format.
    for json in [false, true] {
        for (err, status, closes) in every_error().await {
            let name = format!("{err:?}");
            let detail = err.to_string();
            let reply = respond(Answer::Error(err), json);
            assert_eq!(reply.status.as_u16(), status, "{name}");
            assert_eq!(reply.headers.contains_key(CONNECTION), closes, "{name}");
            assert_eq!(reply.headers[CACHE_CONTROL], "no-store");
            let body = std::str::from_utf8(&reply.body).unwrap();
            if json {
                assert_eq!(reply.headers[CONTENT_TYPE], "application/json", "{name}");
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["status"], status, "{name}");
                assert_eq!(v["detail"], detail.as_str(), "{name}");
            } else {
                assert_eq!(reply.headers[CONTENT_TYPE], "text/html; charset=utf-8");
                assert!(body.contains(&format!("<h1>{status} ")), "{name}: {body}");
            }
        }
    }
}

fn index() -> crate::routes::RouteTable {
    let member = |branch: &str, role| RouteSpec {
        source: branch.into(),
        hosts: vec![],
        path: "/".into(),
        dest: None,
        proto: Proto::Http,
        upstreams: vec![],
        branch: Some(branch.into()),
        role: Some(role),
        policy: Policy::default(),
    };
    let specs = [
        member("feature/<b>", Role::Frontend),
        member("main", Role::Backend),
    ];
    let opts = BuildOptions {
        default_host: None,
        branches: Some(BranchSettings {
            domain: "foo.bar".into(),
            api_prefixes: vec!["/api".into()],
            default_branch: "main".into(),
        }),
    };
    build(&specs, &opts, 1).table
}

#[test]
fn branch_pages_render_in_html_and_json() {
    let table = index();
    let index = table.branches().unwrap();
    let page = |answer, json| {
        let r = respond(answer, json);
        (
            r.status.as_u16(),
            String::from_utf8(r.body.to_vec()).unwrap(),
            r.headers,
        )
    };
    let (status, html, headers) = page(
        Answer::Matrix {
            index,
            port: Some("8080"),
        },
        false,
    );
    assert_eq!(
        (status, &headers[CONTENT_TYPE]),
        (200, &HeaderValue::from_static("text/html; charset=utf-8"))
    );
    assert!(html.contains("//feature-b.main.foo.bar:8080/"), "{html}");
    assert!(
        html.contains("feature/&lt;b&gt;") && !html.contains("<b>"),
        "escaped: {html}"
    );
    let (status, json, headers) = page(Answer::Matrix { index, port: None }, true);
    assert_eq!(
        (status, &headers[CONTENT_TYPE]),
        (200, &HeaderValue::from_static("application/json"))
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["frontends"][0]["branch"], "feature/<b>");

    let missing = || Answer::MissingBranch {
        index,
        role: Role::Backend,
        slug: "gone".into(),
        port: None,
    };
    let (status, html, _) = page(missing(), false);
    assert_eq!(status, 404);
    assert!(
        html.contains("No backend branch <code>gone</code>"),
        "{html}"
    );
    let (status, json, _) = page(missing(), true);
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["error"].as_str(), v["branch"].as_str()),
        (Some("branch not deployed"), Some("gone"))
    );
}

#[test]
fn a_preflight_has_no_body_in_either_format() {
    for json in [false, true] {
        let reply = respond(
            Answer::Preflight(Box::new(Preflight {
                origin: HeaderValue::from_static("https://a.foo.bar"),
                allowed: true,
                method: HeaderValue::from_static("POST"),
                headers: None,
            })),
            json,
        );
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty() && !reply.headers.contains_key(CONTENT_TYPE));
        assert_eq!(
            reply.headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.foo.bar"
        );
        assert!(!reply.headers.contains_key(ACCESS_CONTROL_ALLOW_HEADERS));
    }
}

#[test]
fn json_is_chosen_only_when_preferred_over_html() {
    let v = |s: &'static str| Some(HeaderValue::from_static(s));
    assert!(wants_json(v("application/json").as_ref()));
    assert!(!wants_json(v("text/html, application/json").as_ref()));
    assert!(!wants_json(None));
}
