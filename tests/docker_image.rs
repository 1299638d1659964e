//! The container image (the Dockerfile's runtime stage around the static
//! binary, built by `scripts/docker-image.sh`) runs with the Docker socket
//! mounted read-only, finds its own container, and routes to a container over
//! the network they share, not over the first network by name.

mod support;

use std::time::Duration;

use support::docker::{self, TestContainer, TestNetwork, engine, field, unique};
use support::{eventually, get};

const BRANCHGATE_IMAGE: &str = "branchgate:test";

#[tokio::test]
async fn the_image_routes_over_the_network_it_shares_with_a_container() {
    let Some(engine) = engine() else { return };
    if !docker::has_image(BRANCHGATE_IMAGE) {
        let why = format!("no {BRANCHGATE_IMAGE} image: scripts/docker-image.sh builds it");
        support::skip_unless_ci("image test", &why);
        return;
    }
    let socket = engine
        .url
        .strip_prefix("unix://")
        .expect("a unix socket engine");

    // "zz-..." sorts after "bridge": routing by first network name would pick
    // the bridge address, which the proxy's container cannot reach.
    let net = TestNetwork::named(format!("zz-{}", unique("shared")));
    let host = format!("{}.test", unique("image"));
    let app = engine.run(
        "image-app",
        &["--label", &format!("branchgate.host={host}")],
    );
    docker::docker(&["network", "connect", &net.name, &app.id]);

    let name = unique("branchgate");
    let mount = format!("{socket}:/var/run/docker.sock:ro");
    let id = docker::docker(&[
        "run",
        "-d",
        "--label",
        docker::LABEL,
        "--name",
        &name,
        "--network",
        &net.name,
        "-v",
        &mount,
        BRANCHGATE_IMAGE,
        "--log-format",
        "json",
    ]);
    let proxy = TestContainer { id, name };
    let addr = std::net::SocketAddr::new(proxy.ip_on(&net.name), 80);

    eventually(
        Duration::from_secs(20),
        "the app through the containerised proxy",
        || async {
            let r = tokio::time::timeout(Duration::from_secs(2), get(addr, &host, "/x"))
                .await
                .ok()?;
            (r.status == 200 && field(&r.body, "name") == app.name).then_some(())
        },
    )
    .await;
    let r = get(addr, &host, "/x").await;
    assert_eq!(field(&r.body, "path"), "/x");
    assert_eq!(field(&r.body, "port"), "80");

    // Its log goes to the container's stderr; the access log to stdout.
    let out = std::process::Command::new("docker")
        .args(["logs", &proxy.id])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(all.contains("running in a container"), "{all}");

    // docker stop: a clean exit well inside its 10 s.
    docker::docker(&["stop", &proxy.id]);
    let code = docker::docker(&["inspect", "-f", "{{.State.ExitCode}}", &proxy.id]);
    assert_eq!(code, "0", "{all}");
}
