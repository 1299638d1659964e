//! The exec DNS-01 solver behind `DnsSolver::Exec` (see [`super`]): the
//! script from `--acme-dns exec:`, checked at start-up and run as
//! `SCRIPT present|cleanup NAME. VALUE` (lego's exec convention) with a
//! timeout that also kills what it started, its stderr tail kept for errors.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use super::{DnsError, Op};

/// How long a hook may take to publish or remove a record.
pub(super) const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// How many lines of a failed hook's stderr its error keeps.
const STDERR_LINES: usize = 5;

/// Checks at start-up that the hook is an executable file.
pub(super) fn check_hook(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot use hook: {e}"))?;
    if !meta.is_file() {
        return Err("the hook is not a file".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("the hook is not executable".into());
    }
    Ok(())
}

/// Runs `script ACTION NAME. VALUE`; exit 0 means the record is live (or
/// gone). The script and anything it started are killed after `limit`.
pub(super) async fn run_hook(
    script: &Path,
    op: Op,
    fqdn: &str,
    value: &str,
    limit: Duration,
) -> Result<(), DnsError> {
    let name = format!("{fqdn}.");
    let hook_err = |source| DnsError::Hook {
        script: script.to_owned(),
        source,
    };
    let child = tokio::process::Command::new(script)
        .args([op.as_str(), &name, value])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also kills what it started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(hook_err)?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output.map_err(hook_err)?,
        Err(_) => {
            if let Some(group) = group {
                // Already gone is fine; kill_on_drop covers the script.
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            return Err(DnsError::HookTimeout {
                script: script.to_owned(),
                action: op.as_str(),
                name,
                limit,
            });
        }
    };
    if output.status.success() {
        tracing::debug!(
            script = %script.display(),
            action = op.as_str(),
            name,
            stdout = %String::from_utf8_lossy(&output.stdout).trim(),
            "DNS hook done"
        );
        return Ok(());
    }
    Err(DnsError::HookFailed {
        script: script.to_owned(),
        action: op.as_str(),
        name,
        status: describe_status(output.status),
        stderr: last_lines(&output.stderr, STDERR_LINES),
    })
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The last `n` non-empty lines of `bytes`, joined by ` | `.
fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::dns::tests::executable;

    #[test]
    fn stderr_keeps_its_last_lines() {
        assert_eq!(
            last_lines(b"1\n2\n\n3\n4\n5\n6\n7\n", 5),
            "3 | 4 | 5 | 6 | 7"
        );
        assert_eq!(last_lines(b"", 5), "");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let hook = executable(
            dir.path(),
            "hang",
            &format!("sleep 30 &\necho $! > '{}'\nwait", pid_file.display()),
        );
        let started = std::time::Instant::now();
        let err = run_hook(
            &hook,
            Op::Present,
            "_acme-challenge.foo.bar",
            "v",
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DnsError::HookTimeout { .. }), "{err:?}");
        assert!(
            err.to_string().contains("did not finish within 500ms"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // The sleep it started in the background is gone too (or a zombie).
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            if stat.is_err() || stat.as_deref().is_ok_and(|s| s.contains(") Z ")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
