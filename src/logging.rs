//! Logging: the operator log (`tracing`, text or JSON, on stderr) and the
//! access log on its own target (`branchgate::access`), written to stdout
//! through a buffered, non-blocking writer so the hot path never waits on I/O.
//! Beside the flow: `main` installs it; the access log is written by the
//! request record's sink ([`crate::proxy::record`]).

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{AccessLogFormat, LogFormat};

/// The tracing target of access-log events.
pub const ACCESS_TARGET: &str = "branchgate::access";

/// Displays an error with its whole `source()` chain: `a: b: c`.
pub fn chain(err: &dyn std::error::Error) -> String {
    Chain(err).to_string()
}

/// An error with its whole `source()` chain, formatted only when shown (a
/// log line below the level in force costs nothing).
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

/// Installs the global subscriber. Keep the guard alive until exit so the
/// access log is flushed.
pub fn init(
    format: LogFormat,
    level: &str,
    access: AccessLogFormat,
) -> Result<Option<WorkerGuard>, tracing_subscriber::filter::ParseError> {
    let filter = EnvFilter::try_new(format!("{level},{ACCESS_TARGET}=off"))?;
    let main: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (access_layer, guard) = match access {
        AccessLogFormat::Off => (None, None),
        fmt => {
            let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
            let only_access = Targets::new().with_target(ACCESS_TARGET, Level::INFO);
            let layer = match fmt {
                AccessLogFormat::Json => tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(false)
                    .with_writer(writer)
                    .with_filter(only_access)
                    .boxed(),
                _ => tracing_subscriber::fmt::layer()
                    .event_format(CommonFormat)
                    .with_writer(writer)
                    .with_filter(only_access)
                    .boxed(),
            };
            (Some(layer), Some(guard))
        }
    };
    tracing_subscriber::registry()
        .with(main)
        .with(access_layer)
        .init();
    Ok(guard)
}

#[derive(Default)]
struct Fields {
    client: String,
    host: String,
    method: String,
    path: String,
    version: String,
    status: u64,
    bytes: u64,
    duration_ms: f64,
    upstream: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let slot = match field.name() {
            "client" => &mut self.client,
            "host" => &mut self.host,
            "method" => &mut self.method,
            "path" => &mut self.path,
            "version" => &mut self.version,
            "upstream" => &mut self.upstream,
            _ => return,
        };
        let _ = write!(slot, "{value:?}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "status" => self.status = value,
            "bytes" => self.bytes = value,
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "duration_ms" {
            self.duration_ms = value;
        }
    }
}

/// nginx's "combined"-like line: `client - - [time] "METHOD path VERSION" status bytes "host" upstream duration`.
struct CommonFormat;

impl<S, N> FormatEvent<S, N> for CommonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        writeln!(
            w,
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" {} {:.3}",
            f.client,
            clf_time(SystemTime::now()),
            f.method,
            f.path,
            f.version,
            f.status,
            f.bytes,
            f.host,
            f.upstream,
            f.duration_ms / 1000.0
        )
    }
}

/// Formats a time as the Common Log Format does: `10/Oct/2000:13:55:36 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_time_matches_known_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(clf_time(leap), "29/Feb/2024:00:00:00 +0000");
    }
}
