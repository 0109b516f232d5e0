//! `#[weir::task]` and `weir::export!` compiled natively: what `Task::run` makes of JSON input,
//! what `Task::info` declares. (Running inside a real host is tested by the workspace's
//! integration tests with the plugins in `plugins/`.)

use serde::{Deserialize, Serialize};
use weir::{CachePolicy, ExponentialBackoff, Task, TaskError};

/// Adds two numbers.
///
/// Second paragraph.
#[weir::task(
    retries = 3,
    retry_delay = [1, 5, 10],
    timeout = "30s",
    cache = "inputs",
    cache_expiration = "1h",
    tags = ["math"],
    version = "1.2",
    run_name = "add-{a}",
    log_prints = true
)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Page {
    url: String,
    verbose: bool,
}

#[weir::task(cache_key = key_by_url, description = "Fetches a page.", retry_backoff = "500ms",
             retry_backoff_max = "1m", retry_jitter = 0.25, log_prints = false)]
fn get_url(url: String, verbose: Option<bool>) -> weir::Result<Page> {
    if url.is_empty() {
        return Err(TaskError::fatal("empty URL"));
    }
    if url == "broken" {
        std::fs::read("/this/path/does/not/exist")?;
    }
    Ok(Page {
        url,
        verbose: verbose.unwrap_or(false),
    })
}

fn key_by_url(input: &serde_json::Value) -> Option<String> {
    input.get("url")?.as_str().map(str::to_owned)
}

#[weir::task(name = "nothing")]
fn no_params_no_output() {}

#[derive(Debug)]
struct MyError;

impl From<MyError> for TaskError {
    fn from(_: MyError) -> Self {
        TaskError::fatal("my error")
    }
}

#[weir::task]
fn custom_error(fail: bool) -> Result<u8, MyError> {
    if fail { Err(MyError) } else { Ok(1) }
}

/// A parameter named like the function does not hide it.
#[weir::task]
fn twice(twice: u32, #[serde(default)] extra: u32) -> u32 {
    twice * 2 + extra
}

weir::export!(add, get_url, no_params_no_output, custom_error, twice);

#[test]
fn the_function_is_kept() {
    assert_eq!(add(1, 2), 3);
}

#[test]
fn run_reads_parameters_and_writes_json() {
    assert_eq!(add::run(r#"{"a": 1, "b": 2}"#).unwrap(), "3");
    assert_eq!(
        get_url::run(r#"{"url": "https://x"}"#).unwrap(),
        r#"{"url":"https://x","verbose":false}"#
    );
    assert_eq!(twice::run(r#"{"twice": 4}"#).unwrap(), "8");
}

#[test]
fn wrong_input_is_a_fatal_error_naming_the_field() {
    let error = |result: Result<String, TaskError>| {
        let error = result.unwrap_err();
        assert!(error.is_fatal(), "{error:?}");
        error.to_string()
    };
    assert_eq!(
        error(add::run(r#"{"a": 1, "b": "x"}"#)),
        r#"invalid input for task `add`: b: invalid type: string "x", expected i64"#
    );
    assert_eq!(
        error(add::run(r#"{"a": 1}"#)),
        "invalid input for task `add`: missing field `b`"
    );
    assert_eq!(
        error(add::run(r#"{"a": 1, "b": 2, "c": 3}"#)),
        "invalid input for task `add`: unknown field `c`, expected `a` or `b`"
    );
    assert_eq!(
        error(get_url::run(r#"{"url": 1}"#)),
        "invalid input for task `get-url`: url: invalid type: integer `1`, expected a string"
    );
    assert!(error(add::run("1 +")).starts_with("invalid input for task `add`: not JSON: "));
}

#[test]
fn a_task_without_parameters_accepts_an_empty_object_or_null() {
    assert_eq!(no_params_no_output::run("{}").unwrap(), "null");
    assert_eq!(no_params_no_output::run("null").unwrap(), "null");
    assert!(no_params_no_output::run(r#"{"x": 1}"#).is_err());
}

#[test]
fn errors_keep_their_kind() {
    assert_eq!(
        get_url::run(r#"{"url": ""}"#).unwrap_err(),
        TaskError::fatal("empty URL")
    );
    let io = get_url::run(r#"{"url": "broken"}"#).unwrap_err();
    assert!(!io.is_fatal(), "`?` makes retriable errors");
    assert_eq!(
        custom_error::run(r#"{"fail": true}"#).unwrap_err(),
        TaskError::fatal("my error")
    );
    assert_eq!(custom_error::run(r#"{"fail": false}"#).unwrap(), "1");
}

#[test]
fn info_declares_the_options() {
    let info = add::info();
    assert_eq!(info.name, "add");
    assert_eq!(
        info.description.as_deref(),
        Some("Adds two numbers.\n\nSecond paragraph.")
    );
    assert_eq!(info.version.as_deref(), Some("1.2"));
    assert_eq!(info.tags, ["math"]);
    assert_eq!(info.retries, 3);
    assert_eq!(info.retry_delays_ms, [1_000, 5_000, 10_000]);
    assert_eq!(info.timeout_ms, Some(30_000));
    assert_eq!(info.cache_policy, CachePolicy::Inputs);
    assert_eq!(info.cache_expiration_ms, Some(3_600_000));
    assert!(info.log_prints);
    assert_eq!(info.run_name.as_deref(), Some("add-{a}"));

    let info = get_url::info();
    assert_eq!(info.name, "get-url");
    assert_eq!(info.description.as_deref(), Some("Fetches a page."));
    assert_eq!(info.cache_policy, CachePolicy::CustomKey);
    assert!(matches!(
        info.retry_backoff,
        Some(ExponentialBackoff {
            base_ms: 500,
            max_ms: Some(60_000)
        })
    ));
    assert_eq!(info.retry_jitter_factor, Some(0.25));
    assert!(!info.log_prints);

    let info = no_params_no_output::info();
    assert_eq!(info.name, "nothing");
    assert_eq!(info.description, None);
    assert_eq!(info.retries, 0);
    assert_eq!(info.cache_policy, CachePolicy::None);
    assert!(info.log_prints);
}

#[test]
fn cache_key_uses_the_custom_function() {
    assert_eq!(
        get_url::cache_key(r#"{"url": "https://x", "verbose": true}"#).as_deref(),
        Some("https://x")
    );
    assert_eq!(get_url::cache_key(r#"{"verbose": true}"#), None);
    assert_eq!(add::cache_key(r#"{"a": 1, "b": 2}"#), None);
}

#[test]
fn natively_logging_and_context_do_not_need_a_host() {
    weir::info!("a log line goes to stderr natively");
    assert_eq!(weir::context().attempt, 1);
}
