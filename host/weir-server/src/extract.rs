//! Extractors whose refusals are [`ApiError`]s: a JSON body read with the path of the
//! field that does not fit, query strings and path segments with a message that names
//! what was wrong.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest JSON body the API reads (a flow run's parameters, a limit).
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// A JSON request body.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                let essence = value.split(';').next().unwrap_or_default().trim();
                essence.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        if declared_length(request.headers()).is_some_and(|length| length > MAX_JSON_BYTES as u64) {
            return Err(too_large_error(MAX_JSON_BYTES));
        }
        let bytes = read_body(request.into_body(), MAX_JSON_BYTES).await?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => Ok(Json(value)),
            Err(error) => {
                let path = error.path().to_string();
                let inner = error.into_inner();
                if inner.is_data() {
                    let error = ApiError::unprocessable(format!("the body does not fit: {inner}"));
                    Err(if path == "." {
                        error
                    } else {
                        error.with_field(path)
                    })
                } else {
                    Err(ApiError::bad_request(format!(
                        "the body is not valid JSON: {inner}"
                    )))
                }
            }
        }
    }
}

/// The body's length as its `Content-Length` declares it.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Reads a whole body of at most `limit` bytes: a declared length above it is refused
/// before anything is read, and a body that grows past it is refused once it does.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes_of::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
            || error.to_string().contains("length limit");
        if too_large {
            too_large_error(limit)
        } else {
            ApiError::bad_request(format!("the body could not be read: {error}"))
        }
    })
}

pub fn too_large_error(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the body is larger than this endpoint's limit of {}",
            readable_size(limit)
        ),
    )
}

/// Re-exported so that handlers name one `Bytes`.
pub mod bytes_of {
    pub use axum::body::Bytes;
}

/// A query string.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_error(rejection)),
        }
    }
}

fn query_error(rejection: QueryRejection) -> ApiError {
    // "Failed to deserialize query string: limit: invalid digit found in string"
    let text = rejection.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text)
        .to_owned();
    let field = detail
        .split_once(": ")
        .map(|(field, _)| field.to_owned())
        .filter(|field| !field.contains(' '));
    let error = ApiError::bad_request(format!("the query string does not fit: {detail}"));
    match field {
        Some(field) => error.with_field(field),
        None => error,
    }
}

/// Path segments.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_error(rejection)),
        }
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("the path does not fit: {}", rejection.body_text()))
}

/// `64 MiB`, `512 KiB` or `1000 bytes`.
pub fn readable_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}
