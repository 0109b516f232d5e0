//! Arithmetic tasks for the host's tests: plain and fallible tasks, caching, the run context,
//! long runs and large values.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Adds two integers.
#[weir::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Multiplies two numbers.
#[weir::task]
fn multiply(a: f64, b: f64) -> f64 {
    a * b
}

/// Divides `a` by `b`, rounding toward zero; dividing by zero is a fatal error.
#[weir::task]
fn divide(a: i64, b: i64) -> weir::Result<i64> {
    if b == 0 {
        return Err(weir::TaskError::fatal(format!("cannot divide {a} by zero")));
    }
    a.checked_div(b)
        .ok_or_else(|| weir::TaskError::fatal(format!("{a} / {b} overflows")))
}

/// Returns the run context the host gave this run.
#[weir::task(name = "whoami")]
fn context() -> weir::RunContext {
    weir::context()
}

/// Adds two integers; results are cached by input for an hour. Logs when it really computes.
#[weir::task(cache = "inputs", cache_expiration = "1h")]
fn cached_add(a: i64, b: i64) -> i64 {
    weir::info!("computing {a} + {b}");
    a + b
}

/// Returns `id:noise`; results are cached by `id` alone, so a cache hit returns an older noise.
#[weir::task(cache_key = key_by_id)]
fn keyed(id: String, noise: u64) -> String {
    format!("{id}:{noise}")
}

/// The cache key of `keyed`: its `id`.
fn key_by_id(input: &Value) -> Option<String> {
    input.get("id")?.as_str().map(str::to_owned)
}

/// Adds two integers after keeping the CPU busy for `ms` milliseconds (a busy loop reading the
/// clock, not a sleep).
#[weir::task]
fn slow_add(a: i64, b: i64, ms: u64) -> i64 {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
    a + b
}

/// Spends CPU, the same for any machine's clock: `rounds` steps of a xorshift generator
/// (about a millisecond per million); returns the last value.
#[weir::task]
fn burn(rounds: u64) -> u64 {
    let mut value: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        value ^= value << 13;
        value ^= value >> 7;
        value ^= value << 17;
        value = std::hint::black_box(value);
    }
    value
}

/// Returns its input value unchanged.
#[weir::task]
fn echo(value: Value) -> Value {
    value
}

/// Returns a string of `size` times `x`, to test large outputs.
#[weir::task]
fn big(size: usize) -> String {
    "x".repeat(size)
}

/// Adds up a list of numbers.
#[weir::task]
fn sum(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

weir::export!(
    add, multiply, divide, context, cached_add, keyed, slow_add, burn, echo, big, sum
);
