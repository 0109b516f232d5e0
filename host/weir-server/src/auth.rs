//! The API token: with one configured, every API call must bear it, as
//! `Authorization: Bearer TOKEN` (or `?access_token=TOKEN` on event streams, which a
//! browser's EventSource opens without headers). The UI's pages and assets hold no data and need none.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub(crate) fn guard(router: axum::Router, token: Option<String>) -> axum::Router {
    let Some(token) = token else {
        return router;
    };
    // Compared as hashes: equal-length digests compare in constant time.
    let expected = blake3::hash(token.trim().as_bytes());
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            match presented(&request) {
                Some(given) if blake3::hash(given.as_bytes()) == expected => {
                    next.run(request).await
                }
                Some(_) => refuse("the API token is not valid"),
                None => {
                    refuse("this server needs an API token: send `Authorization: Bearer TOKEN`")
                }
            }
        },
    ))
}

fn presented(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    // Only event streams take the token in the query: elsewhere it would end up in
    // logs and histories for no need.
    if !request.uri().path().ends_with("/events") {
        return None;
    }
    let query = request.uri().query()?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token=").map(percent_decode))
}

/// Tokens are printable ASCII; `%XX` escapes are decoded, anything else is kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(value) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            decoded.push(value);
            index += 3;
            continue;
        }
        decoded.push(if bytes[index] == b'+' {
            b' '
        } else {
            bytes[index]
        });
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn refuse(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"weir\""),
    );
    response
}
