//! The log: env_logger's format and filters, behind a logger that SIGHUP
//! can re-filter (`log.level`) without restarting. `RUST_LOG`, when set,
//! wins over `log.level`, at start and on reload.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

/// The logger in effect; `log` holds the one `Reloadable`.
struct Reloadable(ArcSwap<env_logger::Logger>);

impl log::Log for Reloadable {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.load().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0.load().log(record);
    }

    fn flush(&self) {
        self.0.load().flush();
    }
}

static LOGGER: OnceLock<Reloadable> = OnceLock::new();

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|filters| !filters.is_empty())
}

fn build(level: &str) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&rust_log().unwrap_or_else(|| level.to_string()));
    builder.build()
}

/// Starts logging at `level` (or `RUST_LOG`).
pub fn init(level: &str) {
    let logger = Arc::new(build(level));
    log::set_max_level(logger.filter());
    let reloadable = LOGGER.get_or_init(|| Reloadable(ArcSwap::new(logger.clone())));
    reloadable.0.store(logger);
    let _ = log::set_logger(reloadable);
}

/// Filters the log by `level` from now on. Refused (with why) when
/// `RUST_LOG` is set: it wins.
pub fn set_level(level: &str) -> Result<(), &'static str> {
    if rust_log().is_some() {
        return Err("RUST_LOG is set and wins over log.level");
    }
    let logger = build(level);
    log::set_max_level(logger.filter());
    if let Some(reloadable) = LOGGER.get() {
        reloadable.0.store(Arc::new(logger));
    }
    Ok(())
}
