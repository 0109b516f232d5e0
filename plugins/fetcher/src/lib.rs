//! `get`: an HTTP GET through `wasi:http`, which the host allows only to granted hosts.

use serde_json::{Value, json};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// Fetches `url` and returns its status and body; a 5xx answer is a retriable error,
/// a refused or failed request a fatal one.
#[weir::task(retries = 2, retry_delay = 0, needs = ["http"])]
fn get(url: String) -> weir::Result<Value> {
    let (status, body) = http_get(&url).map_err(weir::TaskError::fatal)?;
    if status >= 500 {
        return Err(weir::TaskError::retriable(format!(
            "{url} answered {status}"
        )));
    }
    Ok(json!({"status": status, "body": body}))
}

fn http_get(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("`{url}` is not an http(s) URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&Method::Get)
        .map_err(|()| "bad method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad authority `{authority}`"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad path `{path}`"))?;
    let body = request.body().map_err(|()| "the request body was taken")?;
    let pending = outgoing_handler::handle(request, None)
        .map_err(|error| format!("the request to {url} failed: {error:?}"))?;
    OutgoingBody::finish(body, None).map_err(|error| format!("{error:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was already taken")?
        .map_err(|error| format!("the request to {url} failed: {error:?}"))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| "the body was already taken")?;
    let stream = incoming
        .stream()
        .map_err(|()| "the body stream was already taken")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(format!(
                    "reading the body failed: {}",
                    error.to_debug_string()
                ));
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

weir::export!(get);
