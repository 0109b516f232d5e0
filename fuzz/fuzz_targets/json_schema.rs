//! A parameter schema and a value, both JSON: the check answers, whatever they are.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let (schema, value) = text.split_once('\n').unwrap_or((text, "null"));
    if let (Ok(schema), Ok(value)) = (
        serde_json::from_str::<serde_json::Value>(schema),
        serde_json::from_str::<serde_json::Value>(value),
    ) {
        let _ = weir_flow::schema::check(&schema, &value);
    }
});
