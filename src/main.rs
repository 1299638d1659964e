//! The `branchgate` binary: flags → logging → [`branchgate::run`]. The only
//! place that exits the process.

use tokio_util::sync::CancellationToken;

#[allow(unsafe_code)]
mod allocator;

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
        match branchgate::run(config, shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
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
