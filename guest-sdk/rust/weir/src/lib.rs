//! Write [weir] workflow tasks in Rust.
//!
//! A weir task plugin is a WebAssembly component (world `weir:task/plugin`, see
//! `wit/weir-task.wit`) holding one or more tasks. With this crate a task is a plain Rust function:
//! its parameters are read from the run's JSON input, its return value becomes the JSON output,
//! and the attribute's options become the task's defaults (retries, timeout, caching...), which
//! a flow may still override.
//!
//! ```
//! use serde::Serialize;
//!
//! /// Adds two numbers.
//! #[weir::task(retries = 3, retry_delay = [1, 5, 10], timeout = "30s", tags = ["math"])]
//! fn add(a: i64, b: i64) -> i64 {
//!     weir::info!("adding {a} and {b}");
//!     a + b
//! }
//!
//! #[derive(Serialize)]
//! struct Page {
//!     url: String,
//!     length: usize,
//! }
//!
//! /// Fetches a page (well, pretends to).
//! #[weir::task(cache_key = by_url, cache_expiration = "1h", run_name = "fetch-{url}")]
//! fn fetch(url: String, verbose: Option<bool>) -> weir::Result<Page> {
//!     if !url.starts_with("https://") {
//!         // Fatal: retrying will not make the URL valid.
//!         return Err(weir::TaskError::fatal(format!("not an https URL: {url}")));
//!     }
//!     if verbose.unwrap_or(false) {
//!         weir::debug!("attempt {}", weir::context().attempt);
//!     }
//!     let length = url.len(); // `?` on any std error gives a retriable error
//!     Ok(Page { url, length })
//! }
//!
//! /// Results of `fetch` are reused for the same URL whatever `verbose` says.
//! fn by_url(input: &serde_json::Value) -> Option<String> {
//!     input.get("url")?.as_str().map(str::to_owned)
//! }
//!
//! weir::export!(add, fetch);
//! #
//! # use weir::Task as _;
//! # assert_eq!(add::run(r#"{"a": 1, "b": 2}"#).unwrap(), "3");
//! ```
//!
//! Build the plugin, a `cdylib` crate, with `cargo build --release --target wasm32-wasip2`.
//!
//! # Tasks
//!
//! [`#[weir::task]`](task) keeps the function as it is, so it can be unit-tested natively, and
//! adds next to it a type of the same name that implements [`Task`]. Its options, all optional:
//!
//! | option | value | meaning |
//! |---|---|---|
//! | `name` | `"get-url"` | the task's name; default: the function's name with `_` turned into `-` |
//! | `description` | `"..."` | default: the function's doc comment |
//! | `version` | `"1.2"` | part of the cache key |
//! | `tags` | `["io", "web"]` | |
//! | `retries` | `3` | how many times a failed attempt is retried |
//! | `retry_delay` | `5`, `0.5`, `"500ms"`, `[1, 5, 10]` | seconds or a duration; one per retry, the last repeats |
//! | `retry_backoff` | `"1s"` | exponential delays instead: base, 2 × base, 4 × base... |
//! | `retry_backoff_max` | `"1m"` | cap of the exponential delays |
//! | `retry_jitter` | `0.5` | each delay varies at random by up to this fraction |
//! | `timeout` | `"30s"`, `"5m"`, `10` | durations are `ms`, `s`, `m`, `h`, `d` (`"1m30s"`); numbers are seconds |
//! | `cache` | `"none"`, `"inputs"` | reuse results for the same input |
//! | `cache_key` | `path::to::function` | reuse results for the same key: `fn(&serde_json::Value) -> Option<String>` given the input object; `None` means "do not cache" |
//! | `cache_expiration` | `"1h"` | how long a cached result stays valid; default forever |
//! | `log_prints` | `true`, `false` | turn the task's stdout and stderr into log lines; default `true` |
//! | `run_name` | `"fetch-{url}"` | template of run names, `{param}` is replaced by the input's field |
//! | `needs` | `["http:api.github.com", "env:TOKEN", "dir:/data:rw", "http"]` | what the task cannot run without; the host refuses to start it unless each is granted |
//!
//! A mistyped option or value is a compile error.
//!
//! **Input.** The input is a JSON object with one field per parameter; a parameter of type
//! `Option<T>` may be absent, any other field is an error. A task without parameters accepts `{}`
//! and `null`. Parameters may carry `#[serde(...)]` attributes (`#[serde(default)]`,
//! `#[serde(rename = "...")]`...). An input that does not fit is a fatal error naming the field:
//! ``invalid input for task `add`: b: invalid type: string "x", expected i64``.
//!
//! **Output.** The return value, any [`serde::Serialize`] type (`()` gives `null`). A return type
//! written `Result<T, E>` (any path ending in `Result`, such as [`weir::Result<T>`](Result)) is
//! a fallible task: `Ok(T)` is the output and `Err(E)` (`E: Into<TaskError>`) the failure.
//!
//! **Errors.** [`TaskError::retriable`] lets the host retry while retries remain;
//! [`TaskError::fatal`] fails the run at once. `?` converts any [`std::error::Error`] into a
//! retriable error.
//!
//! **Panics** abort the component (on wasm32-wasip2 panics cannot unwind); before that, the panic
//! message and its location (`panicked at src/lib.rs:10:5: ...`) are sent to the run's log.
//!
//! # Plugins
//!
//! [`export!`] makes the listed tasks the plugin's exports. Call it once, at the crate root of the
//! plugin. Two tasks with the same name are a compile error; running a task the plugin does not
//! have is a fatal error that lists the tasks it has.
//!
//! # Native tests
//!
//! Outside WebAssembly there is no host: the log macros write to stderr and [`context`] returns a
//! stand-in for a first attempt. So tasks can be tested natively, both as plain functions and
//! through [`Task::run`] with JSON text.
//!
//! [weir]: https://example.invalid/weir

mod context;
mod error;
pub mod http;
mod json;
mod log;
mod panic;
mod task;

pub use context::{RunContext, context};
pub use error::{ErrorKind, Result, TaskError};
pub use log::{LogLevel, log};
pub use serde_json;
pub use task::Task;
/// Marks a function as a weir task; see [the crate docs](crate#tasks) for its options.
pub use weir_macros::task;

pub use bindings::weir::task::types::{CachePolicy, ExponentialBackoff, TaskInfo};

/// The raw bindings of the `weir:task/plugin` world, generated by wit-bindgen.
///
/// Only needed to implement the world by hand; `#[weir::task]` and [`export!`] use them for you.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "weir:task/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "weir::bindings",
    });
}

/// Exports the listed tasks as the plugin's `task` interface.
///
/// ```
/// #[weir::task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// mod web {
///     #[weir::task]
///     pub fn get_url(url: String) -> String {
///         url
///     }
/// }
///
/// weir::export!(add, web::get_url);
/// ```
///
/// Each argument is the path of a function marked `#[weir::task]`. Use it once per plugin crate,
/// at its root. Two tasks with the same name fail to compile ("two tasks have the same name").
#[macro_export]
macro_rules! export {
    ($($task:path),+ $(,)?) => {
        const _: () = {
            const __WEIR_TASKS: &[$crate::__private::TaskEntry] =
                &[$($crate::__private::TaskEntry::of::<$task>()),+];
            const _: () = $crate::__private::assert_unique_names(__WEIR_TASKS);

            struct __WeirPlugin;

            impl $crate::__private::Guest for __WeirPlugin {
                fn info() -> ::std::vec::Vec<$crate::TaskInfo> {
                    $crate::__private::info(__WEIR_TASKS)
                }

                fn run(
                    task: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, $crate::__private::WitTaskError>
                {
                    $crate::__private::run(__WEIR_TASKS, &task, &input)
                        .map_err(::core::convert::Into::into)
                }

                fn cache_key(
                    task: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::core::option::Option<::std::string::String> {
                    $crate::__private::cache_key(__WEIR_TASKS, &task, &input)
                }
            }

            $crate::bindings::__export_plugin!(__WeirPlugin with_types_in $crate::bindings);
        };
    };
}

/// What the code generated by `#[weir::task]` and `weir::export!` uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::weir::task::task::Guest;
    pub use crate::bindings::weir::task::types::TaskError as WitTaskError;
    pub use crate::json::{custom_cache_key, input, output, output_result};
    pub use crate::task::{TaskEntry, TaskSpec, assert_unique_names, cache_key, info, run};
    pub use serde;
}
