//! `--timeout`, `retry_delay`, `--memory` and friends: any text parses or errs.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(duration) = weir_core::parse_duration(text) {
        let _ = weir_core::format_duration(duration);
    }
    let _ = weir_core::parse_size(text);
});
