//! Tasks that fail, to test retries.

/// Fails with a retriable error until attempt `succeed_on`, then succeeds.
#[weir::task(retries = 3, retry_delay = 0)]
fn flaky(succeed_on: u32) -> weir::Result<String> {
    let attempt = weir::context().attempt;
    if attempt < succeed_on {
        return Err(weir::TaskError::retriable(format!(
            "attempt {attempt} failed"
        )));
    }
    Ok(format!("succeeded on attempt {attempt}"))
}

/// Fails with a retriable error on every attempt.
#[weir::task(retries = 2, retry_delay = 0)]
fn always_fails() -> weir::Result<String> {
    let attempt = weir::context().attempt;
    Err(weir::TaskError::retriable(format!(
        "attempt {attempt} failed, as always"
    )))
}

/// Fails with a fatal error: however many retries it has, it must run once.
#[weir::task(retries = 5, retry_delay = 0)]
fn fatal_fails() -> weir::Result<String> {
    let attempt = weir::context().attempt;
    Err(weir::TaskError::fatal(format!(
        "attempt {attempt} failed for good"
    )))
}

weir::export!(flaky, always_fails, fatal_fails);
