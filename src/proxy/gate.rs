//! The branch gate's own pages, on every host under the branch domain:
//! `GET /.branchgate/login` (the form), `POST /.branchgate/login` (a
//! session cookie for the whole domain on success), `/.branchgate/logout`.
//! Answered before routing, like the dashboard host; plain HTTP is
//! redirected to HTTPS first wherever a certificate exists, so passwords
//! travel encrypted.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;

use super::body::ClientBody;
use super::body::ProxyBody;
use super::handler::{Busy, policy_context};
use super::listener::Scheme;
use super::pages::esc;
use super::policy::scheme_rule;
use super::record::RequestRecord;
use super::respond::respond;
use super::route::raw_host;
use crate::guard::gate::{self, Gate};
use crate::guard::{Access, form, signed};
use crate::routes::{MAX_HOST_LEN, Policy, normalize_host};

const PAGE: &str = include_str!("../guard/login.html");

/// Whether `req` is for the gate's own pages on a gated host.
pub fn wants<B>(access: &Access, req: &Request<B>) -> bool {
    if access.gate.is_none() || !req.uri().path().starts_with(gate::PREFIX) {
        return false;
    }
    let mut buf = [0; MAX_HOST_LEN];
    raw_host(req)
        .and_then(|raw| normalize_host(raw, &mut buf))
        .is_some_and(|name| access.in_domain(name))
}

/// Answers a request [`wants`] says is the gate's.
pub async fn serve(
    req: Request<ClientBody>,
    mut record: RequestRecord,
    busy: Busy,
) -> Response<ProxyBody> {
    let connection = busy.connection();
    let shared = &connection.shared;
    let access = &shared.access;
    let Some(gate) = &access.gate else {
        unreachable!("called for a request the gate wants");
    };
    let scheme = connection.info.scheme;
    let tls = scheme == Scheme::Https;
    let unread = !req.body().is_end_stream();
    let mut buf = [0; MAX_HOST_LEN];
    let host = raw_host(&req)
        .and_then(|h| normalize_host(h, &mut buf))
        .unwrap_or_default()
        .to_owned();
    let cx = policy_context(shared, scheme, connection.info.peer.ip());
    if let Err(answer) = scheme_rule(&Policy::default(), &req, &host, &cx) {
        let reply = respond(answer, false);
        record.status = reply.status;
        return reply.into_response(|body| ProxyBody::full(body, record, busy));
    }
    let peer = connection.info.peer.ip();
    let client = access.client(req.headers(), peer).unwrap_or(peer);
    let domain = access.domain.as_deref().unwrap_or_default();
    let path = req.uri().path();
    let mut resp = match (req.method().clone(), path) {
        (Method::GET | Method::HEAD, gate::LOGIN) => {
            let next = req
                .uri()
                .query()
                .and_then(|q| form::value(q.as_bytes(), "next"));
            page(StatusCode::OK, domain, "", next.as_deref())
        }
        (Method::POST, gate::LOGIN) => login(gate, access, client, tls, domain, req).await,
        // POST only: a link elsewhere cannot log anyone out.
        (Method::POST, gate::LOGOUT) => see_other(gate::LOGIN, Some(gate.logout_cookie(tls))),
        _ => {
            let mut r = Response::new(Bytes::from_static(b"no such page\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    if unread {
        // A body not read whole: close rather than skip it.
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    record.status = resp.status();
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, ProxyBody::full(body, record, busy))
}

/// `POST /.branchgate/login`: user and password from the form.
async fn login(
    gate: &Gate,
    access: &Access,
    client: std::net::IpAddr,
    tls: bool,
    domain: &str,
    req: Request<ClientBody>,
) -> Response<Bytes> {
    let Some(form) = form::read(req.into_body()).await else {
        return page(
            StatusCode::BAD_REQUEST,
            domain,
            "The form did not arrive whole.",
            None,
        );
    };
    let field = |name: &str| form::value(&form, name);
    let next = field("next");
    if !access.throttle.attempt(client) {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            domain,
            "Too many failed attempts; try again in a minute.",
            next.as_deref(),
        );
    }
    let user = field("user").unwrap_or_default();
    let password = field("password").unwrap_or_default();
    // bcrypt is slow by design: off the worker thread.
    let users = gate.users.users().clone();
    let check = user.clone();
    let right = tokio::task::spawn_blocking(move || users.list.verify(&check, password.as_bytes()))
        .await
        .unwrap_or(false);
    if !right {
        gate::log_failure(client, Some(&user), "wrong user or password");
        return page(
            StatusCode::UNAUTHORIZED,
            domain,
            "Wrong user or password.",
            next.as_deref(),
        );
    }
    access.throttle.succeeded(client);
    let cookie = gate.login_cookie(&user, signed::unix_now(), tls);
    let next = next.filter(|n| form::local_path(n));
    see_other(next.as_deref().unwrap_or("/"), Some(cookie))
}

/// The login form.
fn page(status: StatusCode, domain: &str, message: &str, next: Option<&str>) -> Response<Bytes> {
    let next = next.filter(|n| form::local_path(n)).unwrap_or("/");
    let html = PAGE
        .replace("{{domain}}", &esc(domain))
        .replace("{{message}}", &esc(message))
        .replace("{{next}}", &esc(next));
    let mut r = Response::new(Bytes::from(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

fn see_other(location: &str, cookie: Option<String>) -> Response<Bytes> {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_wants_its_pages_on_hosts_under_the_domain() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, "ann:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n").unwrap();
        let (users, _) = crate::guard::files::UsersFile::open(file).unwrap();
        let mut access = Access::new(Some("foo.test"));
        access.gate = Some(
            Gate::new(
                std::sync::Arc::new(users),
                dir.path(),
                std::time::Duration::from_secs(60),
                None,
                "foo.test",
            )
            .unwrap(),
        );
        let req =
            |host: &str, path: &str| Request::get(path).header("host", host).body(()).unwrap();
        assert!(wants(
            &access,
            &req("one.main.foo.test", "/.branchgate/login?next=%2F")
        ));
        assert!(wants(&access, &req("FOO.test:8080", "/.branchgate/logout")));
        assert!(!wants(&access, &req("one.main.foo.test", "/.branchgatex")));
        assert!(!wants(&access, &req("foo.test.evil", "/.branchgate/login")));
        assert!(!wants(&access, &req("xfoo.test", "/.branchgate/login")));
    }
}
