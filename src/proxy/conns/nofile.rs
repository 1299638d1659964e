//! The descriptor limit and the default connection cap derived from it.

use tracing::warn;

/// Descriptors kept back from the client cap for listeners, the Docker socket,
/// certificate and routes files, logs and the runtime itself.
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do, and returns the soft limit now
/// in force (`u64::MAX` when unlimited).
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(error) => warn!(%error, "cannot raise RLIMIT_NOFILE to its hard limit"),
        }
    }
    // `None` is RLIM_INFINITY.
    limit.current.unwrap_or(u64::MAX)
}

/// The default `--max-connections` for a descriptor limit: each client
/// connection may hold one upstream connection, and [`RESERVED_FDS`] stay free.
pub fn default_cap(nofile: u64) -> usize {
    let cap = nofile.saturating_sub(RESERVED_FDS) / 2;
    // No process holds more; an "unlimited" limit must not overflow anything.
    cap.clamp(1, 1 << 20) as usize
}
