//! A node's input template with `${…}` references, resolved against a fixed value.
#![no_main]

use weir_flow::reference::{self, Reference, ResolveError};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let template = serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_owned()));
    let _ = reference::references_in(&template);
    let root = serde_json::json!({"a": [1, {"b": "c"}], "0": null});
    let lookup = |reference: &Reference| -> Result<serde_json::Value, ResolveError> {
        reference::follow(reference, &root).cloned()
    };
    let _ = reference::resolve(&template, &lookup);
});
