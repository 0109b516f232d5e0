//! Who calls, and as which tenant: every API call is resolved to a [`Caller`] before
//! any handler runs, and handlers see only the caller's tenant's view of the server
//! (its store handle, runner, change feed and flows).
//!
//! - A store token (`weir_…`, made by `weir token create`) lets its holder in as its
//!   tenant, with its scope, while it is live.
//! - The server's own token (`--token-file`), when it has one, lets its holder in as
//!   the default tenant with every scope.
//! - Without a token, a call is the default tenant's only while the server asks for no
//!   token: it has no `--token-file`, no `--auth tokens`, and the store no tenant but
//!   the default. Once another tenant exists, every call needs a token, on loopback
//!   too.
//!
//! The scope a call needs is read from its method and path in one place
//! ([`needed_scope`]): reading needs `read`; submitting, cancelling and resuming runs
//! and uploading plugins need `run`; changing limits and clearing the cache need
//! `admin`.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_core::{TenantId, TokenScope};
use weir_store::{TOKEN_PREFIX, TokenRecord};

use crate::error::ApiError;
use crate::{AppState, FlowCatalog};

/// How long a token looked up in the store is trusted before it is looked up again: a
/// revoked token stops working within this.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(2);
/// How long the answer to "does a tenant other than the default exist" is kept.
const TENANTS_RECHECK: Duration = Duration::from_secs(1);
/// Tokens remembered at most (a flood of made-up tokens only costs lookups).
const TOKENS_KEPT: usize = 10_000;

/// How calls are let in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Tokens are needed once a tenant other than the default exists (or the server has
    /// a token of its own).
    #[default]
    Auto,
    /// Every call needs a token, whatever tenants exist.
    Tokens,
}

/// The caller of one request: its tenant's view of the server, and what it may do.
#[derive(Clone)]
pub(crate) struct Caller {
    pub app: Arc<AppState>,
    pub scope: TokenScope,
}

/// A handler's view of the server: its caller's tenant's (see the module's docs).
pub(crate) struct Shared<T>(pub T);

impl<S: Send + Sync> FromRequestParts<S> for Shared<Arc<AppState>> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .map(|caller| Shared(caller.app.clone()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no caller for this request"))
    }
}

/// The caller itself, for the handlers that say who it is.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no caller for this request"))
    }
}

/// The tenants' views of the server and the tokens seen lately.
pub(crate) struct Tenancy {
    /// The default tenant's view.
    root: Arc<AppState>,
    mode: AuthMode,
    /// blake3 of the server's own token.
    server_token: Option<blake3::Hash>,
    /// `DIR/NAME/` holds tenant NAME's flow files.
    tenant_flows: Option<std::path::PathBuf>,
    views: Mutex<HashMap<TenantId, Arc<AppState>>>,
    tokens: Mutex<HashMap<String, (Option<TokenRecord>, Instant)>>,
    others: Mutex<Option<(bool, Instant)>>,
}

impl Tenancy {
    pub fn new(root: Arc<AppState>) -> Self {
        let config = &root.config;
        Tenancy {
            mode: config.auth,
            server_token: config
                .token
                .as_ref()
                .map(|token| blake3::hash(token.trim().as_bytes())),
            tenant_flows: config.tenant_flows.clone(),
            root,
            views: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            others: Mutex::new(None),
        }
    }

    /// Every tenant's view made so far (the default tenant's first).
    pub fn views(&self) -> Vec<Arc<AppState>> {
        let mut views = vec![self.root.clone()];
        views.extend(lock(&self.views).values().cloned());
        views
    }

    /// The view of `tenant`, made on its first call.
    fn view(&self, tenant: &TenantId) -> Arc<AppState> {
        if tenant.is_default() {
            return self.root.clone();
        }
        let mut views = lock(&self.views);
        if let Some(view) = views.get(tenant) {
            return view.clone();
        }
        let catalog = FlowCatalog::new(
            self.tenant_flows
                .iter()
                .map(|dir| dir.join(tenant.as_str()))
                .collect(),
        );
        let view = Arc::new(self.root.for_tenant(tenant, catalog));
        views.insert(tenant.clone(), view.clone());
        view
    }

    /// Whether the store has a tenant other than the default (looked up at most once
    /// per [`TENANTS_RECHECK`]).
    async fn others_exist(&self) -> Result<bool, ApiError> {
        if let Some((answer, at)) = *lock(&self.others)
            && at.elapsed() < TENANTS_RECHECK
        {
            return Ok(answer);
        }
        let answer = self
            .root
            .store
            .tenants()
            .await?
            .iter()
            .any(|tenant| !tenant.name.is_default());
        *lock(&self.others) = Some((answer, Instant::now()));
        Ok(answer)
    }

    /// The live token whose text is `text`, if any (looked up at most once per
    /// [`TOKEN_RECHECK`]).
    async fn token(&self, text: &str) -> Result<Option<TokenRecord>, ApiError> {
        let hash = weir_store::token_hash(text);
        let remembered = lock(&self.tokens)
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_RECHECK)
            .map(|(record, _)| record.clone());
        let record = match remembered {
            Some(record) => record,
            None => {
                let record = self.root.store.token_by_hash(&hash).await?;
                let mut tokens = lock(&self.tokens);
                if tokens.len() >= TOKENS_KEPT {
                    tokens.clear();
                }
                tokens.insert(hash, (record.clone(), Instant::now()));
                record
            }
        };
        let now = self.root.clock().now();
        Ok(record.filter(|record| record.is_live(now)))
    }

    /// Who presents `presented` (a token, or none), or why the call is refused.
    async fn caller(&self, presented: Option<String>) -> Result<Caller, Response> {
        let server_token = |text: &str| {
            self.server_token
                .is_some_and(|expected| blake3::hash(text.as_bytes()) == expected)
        };
        match presented.as_deref() {
            Some(text) if server_token(text) => Ok(Caller {
                app: self.root.clone(),
                scope: TokenScope::Admin,
            }),
            Some(text) if text.starts_with(TOKEN_PREFIX) => {
                match self
                    .token(text)
                    .await
                    .map_err(IntoResponse::into_response)?
                {
                    Some(token) => Ok(Caller {
                        app: self.view(&token.tenant),
                        scope: token.scope,
                    }),
                    None => Err(refuse(
                        "the API token is not valid (unknown, revoked or expired)",
                    )),
                }
            }
            Some(_) => Err(refuse("the API token is not valid")),
            None => {
                let needed = self.server_token.is_some()
                    || self.mode == AuthMode::Tokens
                    || self
                        .others_exist()
                        .await
                        .map_err(IntoResponse::into_response)?;
                if needed {
                    Err(refuse(
                        "this server needs an API token: send `Authorization: Bearer TOKEN` (an operator makes one with `weir token create`)",
                    ))
                } else {
                    Ok(Caller {
                        app: self.root.clone(),
                        scope: TokenScope::Admin,
                    })
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Maps and flags: a panic elsewhere cannot leave them half changed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resolves every API call to its caller (refusing it otherwise) and checks the scope
/// its route needs.
pub(crate) fn guard(router: axum::Router, tenancy: Arc<Tenancy>) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |mut request: Request, next: Next| {
            let tenancy = tenancy.clone();
            async move {
                // The token is taken out first: a request is not held across a wait.
                let caller = match tenancy.caller(presented(&request)).await {
                    Ok(caller) => caller,
                    Err(refused) => return refused,
                };
                let needed = needed_scope(request.method(), request.uri().path());
                if !caller.scope.allows(needed) {
                    return ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "this token's scope is `{}`: this call needs `{needed}`",
                            caller.scope
                        ),
                    )
                    .into_response();
                }
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
        },
    ))
}

/// The scope a call needs, by its method and its path under `/api/v1`.
pub fn needed_scope(method: &Method, path: &str) -> TokenScope {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return TokenScope::Read;
    }
    if path == "/cache" || path.starts_with("/concurrency-limits") {
        return TokenScope::Admin;
    }
    TokenScope::Run
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_needs_read_changing_runs_needs_run_and_settings_need_admin() {
        let cases = [
            (Method::GET, "/api/v1/flow-runs", TokenScope::Read),
            (Method::GET, "/api/v1/cache", TokenScope::Read),
            (Method::POST, "/api/v1/flows/quick/runs", TokenScope::Run),
            (
                Method::POST,
                "/api/v1/flow-runs/frun_1/cancel",
                TokenScope::Run,
            ),
            (Method::POST, "/api/v1/plugins", TokenScope::Run),
            (Method::DELETE, "/api/v1/cache", TokenScope::Admin),
            (
                Method::PUT,
                "/api/v1/concurrency-limits/db",
                TokenScope::Admin,
            ),
            (
                Method::POST,
                "/api/v1/concurrency-limits/db/reset",
                TokenScope::Admin,
            ),
        ];
        for (method, path, scope) in cases {
            assert_eq!(needed_scope(&method, path), scope, "{method} {path}");
        }
    }
}
