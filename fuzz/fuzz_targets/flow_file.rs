//! A flow file of any text: loads and validates, or is refused with an error.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(flow) = weir_flow::Flow::from_toml(text, std::path::Path::new("fuzz.toml")) {
        let _ = flow.validate();
    }
});
