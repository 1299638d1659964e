//! Self-test of `support::pebble`: Pebble starts on loopback, its API is
//! reachable with `ca_root`, orders and issuances are counted on the CA side,
//! an issued chain verifies against `issuer_roots`, and stop/restart behave
//! as "CA down" tests need (the port refuses; it comes back empty).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use support::pebble::{Pebble, PebbleOptions};
use support::tls::Client;
use support::{Reply, eventually};

const NAME: &str = "x.foo.bar";
/// How soon a logged line must be counted.
const LOGGED: Duration = Duration::from_secs(5);

/// Validation ports nothing listens on: these tests answer DNS-01 only.
fn options() -> PebbleOptions {
    let port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    PebbleOptions::new(port(), port())
}

/// GET `path` on Pebble's API, trusting only the PEM in `ca_root`.
async fn api_get(pebble: &Pebble, addr: SocketAddr, path: &str) -> Reply {
    let client = Client {
        sni: None,
        alpn: vec![b"http/1.1".to_vec()],
        version: None,
        ca: Some(std::fs::read_to_string(&pebble.ca_root).unwrap()),
        resumption: rustls::client::Resumption::disabled(),
    };
    let session = client.connect(addr).await.unwrap();
    session.get(&addr.to_string(), path).await.0
}

async fn account(pebble: &Pebble) -> Account {
    let new = NewAccount {
        contact: &[],
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, _) = Account::builder_with_root(&pebble.ca_root)
        .unwrap()
        .create(&new, pebble.directory.clone(), None)
        .await
        .unwrap();
    account
}

async fn order(account: &Account) -> Result<Order, instant_acme::Error> {
    account
        .new_order(&NewOrder::new(&[Identifier::Dns(NAME.into())]))
        .await
}

#[tokio::test]
async fn counts_orders_and_restarts_empty() {
    let Some(mut pebble) = Pebble::start(options()).await else {
        return;
    };
    let dir = api_get(&pebble, pebble.acme, "/dir").await;
    assert_eq!(dir.status, StatusCode::OK);
    let dir = dir.json();
    assert!(dir["newOrder"].is_string(), "{dir}");
    let root = pebble.issuer_roots().await;
    assert!(root.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!((pebble.orders(), pebble.issued()), (0, 0));

    // An order left pending is counted; nothing is issued.
    let account = account(&pebble).await;
    let mut pending = order(&account).await.unwrap();
    assert_eq!(pending.state().status, OrderStatus::Pending);
    eventually(LOGGED, "one order counted", || async {
        (pebble.orders() == 1).then_some(())
    })
    .await;
    assert_eq!(pebble.issued(), 0);

    pebble.stop();
    let refused = tokio::net::TcpStream::connect(pebble.acme).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    pebble.restart().await;
    let dir = api_get(&pebble, pebble.acme, "/dir").await;
    assert_eq!(dir.status, StatusCode::OK);
    assert_ne!(pebble.issuer_roots().await, root, "a new root per start");
    // The account died with the old process.
    match order(&account).await {
        Err(instant_acme::Error::Api(p)) => assert_eq!(
            p.r#type.as_deref(),
            Some("urn:ietf:params:acme:error:accountDoesNotExist"),
            "{p:?}"
        ),
        Err(e) => panic!("expected accountDoesNotExist, got {e}"),
        Ok(_) => panic!("the old account still works after a restart"),
    }
    assert_eq!(pebble.orders(), 1, "counts span restarts");
}

#[tokio::test]
async fn dns01_issues_a_short_lived_chain_to_the_issuer_root() {
    let opts = PebbleOptions {
        validity: Some(Duration::from_secs(90)),
        ..options()
    };
    let Some(pebble) = Pebble::start(opts).await else {
        return;
    };
    let account = account(&pebble).await;
    let mut order = order(&account).await.unwrap();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.unwrap();
        assert_eq!(authz.status, AuthorizationStatus::Pending);
        let mut challenge = authz.challenge(ChallengeType::Dns01).unwrap();
        let value = challenge.key_authorization().dns_value();
        pebble
            .add_txt(&format!("_acme-challenge.{NAME}"), &value)
            .await;
        challenge.set_ready().await.unwrap();
    }
    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(50));
    assert_eq!(order.poll_ready(&retry).await.unwrap(), OrderStatus::Ready);
    let finalized_at = now();
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&retry).await.unwrap();
    eventually(LOGGED, "one issuance counted", || async {
        (pebble.issued() == 1).then_some(())
    })
    .await;
    assert_eq!(pebble.orders(), 1);

    // Leaf + intermediate; the root only at the management interface.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(certs.len(), 2, "{chain}");
    let intermediate = pebble.intermediate().await;
    let intermediate = CertificateDer::from_pem_slice(&intermediate).unwrap();
    assert_eq!(certs[1], intermediate);

    // notBefore is the issuance, not backdated; the lifetime is validity - 1 s.
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    assert!(
        (finalized_at - 2..=now() + 1).contains(&not_before),
        "notBefore {not_before}, finalized at {finalized_at}"
    );
    assert_eq!(not_after - not_before, 89);

    let mut roots = rustls::RootCertStore::empty();
    let root = pebble.issuer_roots().await;
    roots
        .add(CertificateDer::from_pem_slice(&root).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    verifier
        .verify_server_cert(
            &certs[0],
            &certs[1..],
            &ServerName::try_from(NAME).unwrap(),
            &[],
            UnixTime::now(),
        )
        .expect("the issued chain verifies against issuer_roots");
}

fn now() -> i64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(secs.as_secs()).unwrap()
}
