//! Task metadata as a plugin declares it (here as JSON): checked against the declared
//! maxima, and a checked policy never waits past a day.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let Ok(info) = serde_json::from_str::<weir_core::TaskInfo>(text) else {
        return;
    };
    let checked = info.check();
    for retry in [0, 1, 7, u32::MAX] {
        let delay = info.retry.delay_before_retry(retry, 0.75);
        assert!(delay <= weir_core::declared::MAX_RETRY_DELAY);
    }
    if checked.is_ok() {
        assert!(info.retry.retries <= weir_core::declared::MAX_RETRIES);
    }
});
