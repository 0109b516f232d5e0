//! Log lines attached to the current task run.

pub use crate::bindings::weir::task::types::LogLevel;

/// Writes `message` to the log of the current task run.
///
/// Usually called through [`trace!`](crate::trace), [`debug!`](crate::debug),
/// [`info!`](crate::info), [`warn!`](crate::warn) or [`error!`](crate::error).
///
/// Outside WebAssembly (in a plugin's native unit tests) there is no host: the line goes to
/// stderr instead.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::weir::task::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{}] {message}", level_name(level));
}

#[cfg(not(target_arch = "wasm32"))]
fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warning",
        LogLevel::Error => "error",
    }
}

/// Logs a line at trace level: `weir::trace!("raw response: {body}")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log($crate::LogLevel::Trace, &::std::format!($($arg)+))
    };
}

/// Logs a line at debug level: `weir::debug!("cache miss for {key}")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log($crate::LogLevel::Debug, &::std::format!($($arg)+))
    };
}

/// Logs a line at info level: `weir::info!("fetched {} rows", rows.len())`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log($crate::LogLevel::Info, &::std::format!($($arg)+))
    };
}

/// Logs a line at warning level: `weir::warn!("slow response: {ms} ms")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log($crate::LogLevel::Warning, &::std::format!($($arg)+))
    };
}

/// Logs a line at error level: `weir::error!("giving up on {url}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log($crate::LogLevel::Error, &::std::format!($($arg)+))
    };
}
