//! `get`: an HTTP GET through `weir::http` (`wasi:http`), which the host allows only to
//! granted hosts.

use serde_json::{Value, json};

/// Fetches `url` and returns its status and body; a 5xx answer is a retriable error.
#[weir::task(retries = 2, retry_delay = 0, needs = ["http"])]
fn get(url: String) -> weir::Result<Value> {
    let response = weir::http::get(&url)?;
    if response.status >= 500 {
        return Err(weir::TaskError::retriable(format!(
            "{url} answered {}",
            response.status
        )));
    }
    Ok(json!({"status": response.status, "body": response.text()}))
}

weir::export!(get);
