//! Outgoing HTTP for tasks, through `wasi:http`. The host lets a request through only to
//! hosts the run is granted (declare `needs = ["http:HOST"]` on the task); a refused
//! request is an error here, and the run's log names the refused host.
//!
//! ```no_run
//! # fn demo() -> weir::Result<()> {
//! let response = weir::http::get("https://api.github.com/repos/PrefectHQ/prefect")?;
//! if response.status >= 500 {
//!     return Err(weir::TaskError::retriable(format!("the server answered {}", response.status)));
//! }
//! let repo: serde_json::Value = response.json()?;
//! # Ok(()) }
//! ```

use crate::TaskError;

/// An HTTP response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; not JSON is a fatal error (retrying will not change it).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, TaskError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            TaskError::fatal(format!("the response is not the JSON expected: {error}"))
        })
    }
}

/// Sends a GET request. A refused or failed request is a retriable error (a network
/// may recover; a refused host does not, so declare your needs); the status is yours to
/// judge.
pub fn get(url: &str) -> Result<Response, TaskError> {
    imp::get(url).map_err(TaskError::retriable)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Response;
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    pub(super) fn get(url: &str) -> Result<Response, String> {
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
        let headers = Fields::new();
        // Some servers (GitHub's API among them) refuse requests without a user agent.
        headers
            .append("user-agent", b"weir-task")
            .map_err(|error| format!("{error:?}"))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| format!("`{url}`: invalid {what}");
        request
            .set_method(&Method::Get)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| invalid("path"))?;
        let body = request
            .body()
            .map_err(|()| "the request body was taken".to_owned())?;
        let pending = outgoing_handler::handle(request, None)
            .map_err(|error| format!("the request to {url} failed: {error:?}"))?;
        OutgoingBody::finish(body, None).map_err(|error| format!("{error:?}"))?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or("no response")?
            .map_err(|()| "the response was already taken".to_owned())?
            .map_err(|error| format!("the request to {url} failed: {error:?}"))?;
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|()| "the body was already taken".to_owned())?;
        let stream = incoming
            .stream()
            .map_err(|()| "the body stream was already taken".to_owned())?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(format!(
                        "reading the body from {url} failed: {}",
                        error.to_debug_string()
                    ));
                }
            }
        }
        Ok(Response { status, body })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Response;

    pub(super) fn get(url: &str) -> Result<Response, String> {
        Err(format!(
            "cannot GET {url}: HTTP is only available inside a weir task (on wasm32)"
        ))
    }
}
