//! Tenants and their tokens, as the store keeps them.
//!
//! A token is shown once, when it is made, and stored only as the blake3 hash of its
//! text ([`token_hash`]): tokens are 256 random bits, so a fast hash is as strong as a
//! slow one (there is no dictionary to try), and checking one costs a lookup by hash.

use serde::Serialize;
use weir_core::{TenantId, Timestamp, TokenScope};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantRecord {
    pub name: TenantId,
    /// Its share of the workers when tenants compete for them (1 to 1,000).
    pub weight: u32,
    pub created: Timestamp,
}

/// A token as stored: everything but its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRecord {
    /// `tok_…`, what `weir token revoke` takes.
    pub id: String,
    pub tenant: TenantId,
    pub scope: TokenScope,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
}

impl TokenRecord {
    /// Whether the token lets its holder in at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|expires| now.0 < expires.0)
    }
}

/// A token to store: its record and the hash of its text.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: TokenRecord,
    pub hash: String,
}

/// The prefix of every token's text, so that one is recognised in a file or a log.
pub const TOKEN_PREFIX: &str = "weir_";

impl NewToken {
    /// A new token of `tenant` with `scope`, made at `now`, expiring at `expires`: its
    /// text (`weir_` and 64 hex digits of 256 random bits, to show once) and what to
    /// store.
    pub fn generate(
        tenant: &TenantId,
        scope: TokenScope,
        now: Timestamp,
        expires: Option<Timestamp>,
    ) -> Result<(String, NewToken), getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        let mut text = String::from(TOKEN_PREFIX);
        for byte in secret {
            text.push_str(&format!("{byte:02x}"));
        }
        let token = NewToken {
            record: TokenRecord {
                id: weir_core::TokenId::generate().to_string(),
                tenant: tenant.clone(),
                scope,
                created: now,
                expires,
                revoked: None,
            },
            hash: token_hash(&text),
        };
        Ok((text, token))
    }
}

/// The hash a token is stored and looked up under.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// What deleting a tenant removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeletedTenant {
    pub flow_runs: u64,
    pub task_runs: u64,
    pub tokens: u64,
}

/// Why a tenant could not be deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantDeletion {
    Deleted(DeletedTenant),
    NotFound,
    /// The default tenant is never deleted.
    Default,
    /// It has runs that have not ended: cancel them first.
    Busy {
        unfinished: u64,
    },
}
