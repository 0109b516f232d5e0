//! Reports a task's panic to the host as an error log line.
//!
//! On wasm32-wasip2 a panic aborts: the host only sees a trap. The hook sends the panic message and
//! its location first, so the host can tell the user why the task died.

use std::panic::PanicHookInfo;

/// Installs the hook the first time a task runs; later calls do nothing.
pub(crate) fn install_hook() {
    // Natively (a plugin's unit tests) the default hook already prints the same line to stderr.
    #[cfg(target_arch = "wasm32")]
    {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| std::panic::set_hook(Box::new(report)));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn report(info: &PanicHookInfo<'_>) {
    let location = info.location().map(|location| {
        format!(
            "{}:{}:{}",
            location.file(),
            location.line(),
            location.column()
        )
    });
    let message = describe(location.as_deref(), payload_text(info));
    crate::log(crate::LogLevel::Error, &message);
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn payload_text<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
    info.payload_as_str()
        .unwrap_or("Box<dyn Any> (a panic payload that is not a string)")
}

/// `panicked at src/lib.rs:10:5: <message>`, the way Rust's default hook says it.
fn describe(location: Option<&str>, message: &str) -> String {
    match location {
        Some(location) => format!("panicked at {location}: {message}"),
        None => format!("panicked: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_panic_like_the_default_hook() {
        assert_eq!(
            describe(Some("src/lib.rs:10:5"), "boom"),
            "panicked at src/lib.rs:10:5: boom"
        );
        assert_eq!(describe(None, "boom"), "panicked: boom");
    }
}
