//! The route phase without sockets: a snapshot built from specs, requests
//! made in memory.

use std::time::Duration;

use http::Request;

use super::*;
use crate::routes::{
    BranchSettings, BuildOptions, HostPattern, Policy, Proto, Role, RouteSpec, build,
};
use crate::upstream::{ClientSettings, Registry};

fn spec(host: Option<&str>, path: &str, port: u16) -> RouteSpec {
    RouteSpec {
        source: format!("spec-{port}"),
        hosts: host
            .map(|h| vec![HostPattern::parse(h).unwrap()])
            .unwrap_or_default(),
        path: path.into(),
        dest: None,
        proto: Proto::Http,
        upstreams: vec![([127, 0, 0, 1], port).into()],
        branch: None,
        role: None,
        policy: Policy::default(),
    }
}

fn member(branch: &str, role: Role, port: u16) -> RouteSpec {
    RouteSpec {
        branch: Some(branch.into()),
        role: Some(role),
        ..spec(None, "/", port)
    }
}

fn snapshot() -> Snapshot {
    let specs = [
        spec(Some("app.foo.bar"), "/", 1),
        spec(Some("app.foo.bar"), "/api/", 2),
        spec(Some("only.foo.bar"), "/x/", 3),
        spec(Some("*.wild.foo.bar"), "/", 4),
        member("main", Role::Frontend, 5),
        member("main", Role::Backend, 6),
    ];
    let opts = BuildOptions {
        default_host: None,
        branches: Some(BranchSettings {
            domain: "env.foo.bar".into(),
            api_prefixes: vec!["/api".into()],
            default_branch: "main".into(),
        }),
    };
    let built = build(&specs, &opts, 1);
    let settings = ClientSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    };
    Snapshot::resolve(built.table, &mut Registry::new(settings, 1), built.notes)
}

fn get(target: &str, host: Option<&str>) -> Request<()> {
    let mut b = Request::get(target);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    b.body(()).unwrap()
}

fn port_of(snap: &Snapshot, r: &Routed<'_>) -> u16 {
    let _ = snap;
    r.pool.upstreams()[0].addr.port()
}

#[test]
fn a_host_and_path_find_their_route_and_live_pool() {
    let snap = snapshot();
    for (target, host, port, how) in [
        ("/", Some("app.foo.bar"), 1, HostMatch::Exact),
        ("/api/v1", Some("APP.foo.bar:8080"), 2, HostMatch::Exact),
        (
            "http://app.foo.bar/api/x",
            Some("ignored.example"),
            2,
            HostMatch::Exact,
        ),
        ("/", Some("a.wild.foo.bar."), 4, HostMatch::Suffix),
        ("/", Some("main.env.foo.bar"), 5, HostMatch::Branch),
        (
            "/api/users",
            Some("main.main.env.foo.bar"),
            6,
            HostMatch::Branch,
        ),
    ] {
        let req = get(target, host);
        let mut buf = [0; MAX_HOST_LEN];
        let r = route(&snap, &req, &mut buf).unwrap_or_else(|a| panic!("{target} {host:?}: {a:?}"));
        assert_eq!(
            (port_of(&snap, &r), r.how),
            (port, how),
            "{target} {host:?}"
        );
    }
    let req = get("/api/x", Some("app.foo.bar"));
    let mut buf = [0; MAX_HOST_LEN];
    let r = route(&snap, &req, &mut buf).unwrap();
    assert_eq!(&**r.pool.key().route(), "app.foo.bar/api/");
    assert_eq!(r.host, "app.foo.bar");
}

fn error(snap: &Snapshot, req: &Request<()>) -> String {
    match route(snap, req, &mut [0; MAX_HOST_LEN]) {
        Err(Answer::Error(e)) => format!("{e:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_request_or_an_unknown_host_is_an_error_answer() {
    let snap = snapshot();
    assert_eq!(error(&snap, &get("/", None)), "BadHost");
    assert_eq!(error(&snap, &get("/", Some("bad host"))), "BadHost");
    assert_eq!(error(&snap, &get("/", Some("nowhere.foo.bar"))), "NoHost");
    assert_eq!(error(&snap, &get("/y/", Some("only.foo.bar"))), "NoPath");
    assert_eq!(
        error(&snap, &get("/a/../b", Some("app.foo.bar"))),
        "DotSegments"
    );
    let long = format!("/{}", "a".repeat(MAX_REQUEST_TARGET));
    assert_eq!(error(&snap, &get(&long, Some("app.foo.bar"))), "UriTooLong");
    assert_eq!(error(&snap, &get("ftp://app.foo.bar/", None)), "BadScheme");
    let two = Request::get("/")
        .header("host", "app.foo.bar")
        .header("host", "only.foo.bar")
        .body(())
        .unwrap();
    assert_eq!(error(&snap, &two), "DuplicateHost");
}

#[test]
fn the_branch_domain_answers_its_pages() {
    let snap = snapshot();
    let req = get("/", Some("env.foo.bar:8443"));
    match route(&snap, &req, &mut [0; MAX_HOST_LEN]) {
        Err(Answer::Matrix { index, port }) => {
            assert_eq!((index.domain(), port), ("env.foo.bar", Some("8443")));
        }
        other => panic!("{other:?}"),
    }
    let req = get("/api/x", Some("main.gone.env.foo.bar"));
    match route(&snap, &req, &mut [0; MAX_HOST_LEN]) {
        Err(Answer::MissingBranch {
            role, slug, port, ..
        }) => {
            assert_eq!((role, &*slug, port), (Role::Backend, "gone", None));
        }
        other => panic!("{other:?}"),
    }
}
