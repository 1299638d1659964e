//! The `branchgate` binary: flags → logging → [`branchgate::bind`],
//! `--defer-accept` on its listeners, [`branchgate::Bound::run`]. The only
//! place that exits the process.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

#[allow(unsafe_code)]
mod allocator;
#[allow(unsafe_code)]
mod defer_accept;

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

fn main() -> std::process::ExitCode {
    let config = match branchgate::Config::from_args() {
        Ok(c) => c,
        Err(branchgate::config::ArgsError::Display(help)) => help.exit(),
        Err(branchgate::config::ArgsError::Invalid(message)) => {
            eprintln!("branchgate: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let _guard =
        match branchgate::logging::init(config.log_format, &config.log_level, config.access_log) {
            Ok(g) => g,
            Err(e) => {
                eprintln!(
                    "branchgate: invalid value '{}' for '--log-level': {e}",
                    config.log_level
                );
                return std::process::ExitCode::from(2);
            }
        };
    // Worker 0 runs here; further workers get their own single-threaded runtimes.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("branchgate: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match run(config, shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// [`branchgate::bind`], then `--defer-accept` on its listeners (set here:
/// the library has no `unsafe` code), then [`branchgate::Bound::run`].
async fn run(config: branchgate::Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let defer = config.defer_accept;
    let bound = branchgate::bind(config).await?;
    if defer {
        for listener in bound.listeners() {
            defer_accept::set(listener).with_context(|| {
                let addr = listener.local_addr().map(|a| a.to_string());
                format!(
                    "--defer-accept: cannot set TCP_DEFER_ACCEPT on {}",
                    addr.unwrap_or_default()
                )
            })?;
        }
    }
    bound.run(shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
