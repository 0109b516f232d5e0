//! Who the caller is: its tenant and its token's scope (what the UI shows beside the
//! runs it lists).

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_core::{TenantId, TokenScope};

use crate::tenancy::Caller;

/// The caller of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The tenant whose runs, plugins, cache and limits the caller sees.
    pub tenant: TenantId,
    pub scope: TokenScope,
}

#[utoipa::path(get, path = "/whoami", tag = "tenants",
    responses((status = 200, body = Whoami), (status = 401, body = crate::ErrorBody)))]
pub(super) async fn whoami(caller: Caller) -> Json<Whoami> {
    Json(Whoami {
        tenant: caller.app.store.tenant_id().clone(),
        scope: caller.scope,
    })
}
