//! A real Docker engine for black-box tests, driven through the `docker` CLI.
//!
//! `scripts/test.sh` starts an engine and builds the echo image
//! (`tests/docker/echo.rs`, FROM scratch) before `cargo test`. Run alone,
//! [`engine`] builds the image itself when an engine answers. Without one a
//! test fails under `CI=true` and is skipped with a loud message otherwise.

use std::net::IpAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The echo backend image the tests run.
pub const IMAGE: &str = "branchgate-test-echo:latest";
/// Label on every test container and network, so leftovers can be swept.
pub const LABEL: &str = "branchgate-test";

/// The engine under test.
pub struct Engine {
    /// The URL branchgate is given with `--docker`.
    pub url: String,
}

/// The engine, or `None` (with a loud message) when there is none and this is not CI.
pub fn engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    match ENGINE.get_or_init(find_engine) {
        Ok(e) => Some(e),
        Err(why) => {
            super::skip_unless_ci(
                "Docker test",
                &format!("{why} (scripts/test.sh starts an engine)"),
            );
            None
        }
    }
}

fn find_engine() -> Result<Engine, String> {
    if std::env::var("BRANCHGATE_TEST_DOCKER").is_ok_and(|v| v == "0") {
        return Err("BRANCHGATE_TEST_DOCKER=0 (scripts/test.sh found no engine)".into());
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if !info.status.success() {
        return Err(format!(
            "no Docker engine answers: {}",
            String::from_utf8_lossy(&info.stderr).trim()
        ));
    }
    if !has_image(IMAGE) {
        let built = Command::new("bash")
            .args(["-c", "source scripts/docker-engine.sh && build_echo_image"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        if !built.success() {
            return Err(format!("building {IMAGE} failed"));
        }
    }
    let url = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    Ok(Engine { url })
}

/// Whether the engine has image `name`.
pub fn has_image(name: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the docker CLI, panicking with its stderr on failure; returns stdout trimmed.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A name unique to this test process: `bgt-<hint>-<pid>-<n>`.
pub fn unique(hint: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("bgt-{hint}-{}-{n}", std::process::id())
}

/// A test container, removed when dropped.
pub struct TestContainer {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
}

impl Engine {
    /// `docker run -d` of the echo image with extra `docker run` flags; the
    /// container answers with `name=<ECHO_NAME>` set to its name.
    pub fn run(&self, hint: &str, flags: &[&str]) -> TestContainer {
        let c = self.create(hint, flags);
        docker(&["start", &c.id]);
        c
    }

    /// `docker create` only (started later with [`TestContainer::start`]).
    pub fn create(&self, hint: &str, flags: &[&str]) -> TestContainer {
        let name = unique(hint);
        let echo_name = format!("ECHO_NAME={name}");
        let mut args = vec![
            "create", "--label", LABEL, "--name", &name, "-e", &echo_name,
        ];
        args.extend_from_slice(flags);
        args.push(IMAGE);
        let id = docker(&args);
        TestContainer { id, name }
    }
}

impl TestContainer {
    /// `docker start`.
    pub fn start(&self) {
        docker(&["start", &self.id]);
    }

    /// `docker stop -t 1`.
    pub fn stop(&self) {
        docker(&["stop", "-t", "1", &self.id]);
    }

    /// The container's address on `network`.
    pub fn ip_on(&self, network: &str) -> IpAddr {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker(&["inspect", "-f", &format, &self.id])
            .parse()
            .expect("an IP address")
    }

    /// Runs `docker <verb> <extra...> <id>` (pause, unpause, ...).
    pub fn cli(&self, verb: &str, extra: &[&str]) -> String {
        let mut args = vec![verb];
        args.extend_from_slice(extra);
        args.push(&self.id);
        docker(&args)
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

/// A user-defined bridge network, removed when dropped.
pub struct TestNetwork {
    /// Its name.
    pub name: String,
}

impl TestNetwork {
    /// `docker network create`.
    pub fn create(hint: &str) -> Self {
        Self::named(unique(hint))
    }

    /// `docker network create NAME`.
    pub fn named(name: String) -> Self {
        docker(&["network", "create", "--label", LABEL, &name]);
        TestNetwork { name }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// A `key=value` line of the echo backend's answer (`name`, `port`, `path`, ...).
pub fn field(body: &[u8], key: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let prefix = format!("{key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in the answer: {text}"))
        .to_owned()
}

/// A second Docker engine of the test's own (own data root, exec root and
/// socket), so a test can stop and restart it without touching the engine
/// other tests use. Started with `--live-restore`, as production hosts run,
/// so its containers outlive a daemon restart. Stopped and cleaned up on drop.
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    /// Its own default bridge: `--bridge=none` would make dockerd delete the
    /// shared engine's `docker0`.
    bridge: String,
    child: Option<std::process::Child>,
    /// `unix://.../docker.sock`.
    pub url: String,
}

impl PrivateEngine {
    /// Starts `dockerd` (panics if it cannot) and loads the echo image into it.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgd")
            .tempdir_in("/tmp")
            .unwrap();
        let url = format!("unix://{}/docker.sock", dir.path().display());
        let bridge = format!("bgt{}", std::process::id() % 1_000_000);
        let made = Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .status()
            .expect("ip (iproute2) runs");
        assert!(made.success(), "cannot create bridge {bridge}");
        let mut e = PrivateEngine {
            dir,
            bridge,
            child: None,
            url,
        };
        e.up();
        let save = Command::new("sh")
            .args([
                "-c",
                &format!("docker save {IMAGE} | docker -H {} load -q", e.url),
            ])
            .output()
            .unwrap();
        assert!(
            save.status.success(),
            "{}",
            String::from_utf8_lossy(&save.stderr)
        );
        e
    }

    /// The docker CLI against this engine.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-H", &self.url];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Starts the daemon and waits until it answers.
    pub fn up(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["-H", &self.url, "--storage-driver", "vfs", "--live-restore"])
            // The engine other tests use owns iptables and docker0.
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bridge",
                &self.bridge,
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd runs");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !Command::new("docker")
            .args(["-H", &self.url, "info"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "private dockerd did not answer in 60s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the daemon (SIGTERM to the process this test started) and waits
    /// for it to exit; containers keep running (live restore).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.up();
        }
        let ids = Command::new("docker")
            .args(["-H", &self.url, "ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker")
                .args(["-H", &self.url, "rm", "-f", id])
                .output();
        }
        let _ = Command::new("docker")
            .args(["-H", &self.url, "network", "prune", "-f"])
            .output();
        self.down();
        // dockerd bind-mounts its data root onto itself; undo that before removal.
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
