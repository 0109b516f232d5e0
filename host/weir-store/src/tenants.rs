//! Tenants and their tokens, as the store keeps them.
//!
//! A token is shown once, when it is made, and stored only as the blake3 hash of its
//! text ([`token_hash`]): tokens are 256 random bits, so a fast hash is as strong as a
//! slow one (there is no dictionary to try), and checking one costs a lookup by hash.

use serde::{Deserialize, Serialize};
use weir_core::{TenantId, Timestamp, TokenScope};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantRecord {
    pub name: TenantId,
    /// Its share of the workers when tenants compete for them (1 to 1,000).
    pub weight: u32,
    pub created: Timestamp,
    pub quotas: Quotas,
    /// The most its runs may be granted (directories, environment variables, HTTP
    /// hosts), whatever their flows say; `None`: no ceiling but the workers'.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub ceilings: Option<weir_core::Grants>,
}

/// What an operator sets for a tenant, as stored with it (JSON; fields a later weir adds
/// are ignored by this one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    pub quotas: Quotas,
    pub ceilings: Option<weir_core::Grants>,
}

impl TenantSettings {
    /// The stored form.
    pub fn to_json(&self) -> String {
        // Numbers, strings and lists: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The stored form read back; text that is not settings (a damaged row) reads as
    /// none, and says so in the log.
    pub fn from_json(text: &str) -> TenantSettings {
        serde_json::from_str(text).unwrap_or_else(|error| {
            tracing::warn!("a tenant's stored settings are unreadable ({error}): none apply");
            TenantSettings::default()
        })
    }
}

/// What an operator bounds a tenant's use by; `None` is no bound. Stored as JSON with
/// the tenant (fields a later weir adds are ignored by this one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Quotas {
    /// Task runs of the tenant claimed by workers at once; more wait in the queue.
    pub task_runs_in_progress: Option<u32>,
    /// Linear memory summed over the tenant's claimed task runs, each counted at its
    /// memory limit; a run that would pass it waits in the queue.
    pub memory_in_flight_bytes: Option<u64>,
    /// The most memory one task run of the tenant may use, whatever it asks: a run that
    /// needs more ends `Crashed`, naming the quota.
    pub memory_per_task_bytes: Option<u64>,
    /// Runs it may submit per minute through the API, on average (a token bucket); past
    /// it a submission is refused (429), saying when to try again.
    pub runs_per_minute: Option<u32>,
    /// How many runs it may submit at once before the rate holds (the bucket's size;
    /// `runs_per_minute` when not given).
    pub runs_burst: Option<u32>,
    /// The largest plugin it may upload; larger is refused (413).
    pub plugin_bytes: Option<u64>,
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

/// What a tenant uses now, to set against its [`Quotas`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantUsage {
    /// Its task runs claimed by workers now.
    pub task_runs_in_progress: u64,
    /// The memory limits of those task runs, summed.
    pub memory_in_flight_bytes: u64,
    /// Its runs waiting in the queue (task runs and flow runs).
    pub queued: u64,
}

/// The tables whose rows name a tenant's run, with the column that names it and the
/// runs' table: what a tenant's deletion empties first (both backends' schemas).
pub const ROWS_OF_TENANT_RUNS: &[(&str, &str, &str)] = &[
    ("task_run_states", "task_run_id", "task_runs"),
    ("logs", "task_run_id", "task_runs"),
    ("cancel_requests", "run_id", "task_runs"),
    ("cancel_requests", "run_id", "flow_runs"),
    ("flow_run_states", "flow_run_id", "flow_runs"),
    ("flow_run_nodes", "flow_run_id", "flow_runs"),
];

/// The tables with a `tenant` column besides the runs': what a deletion empties after them.
pub const TENANT_TABLES: &[&str] = &[
    "work_queue",
    "concurrency_slots",
    "concurrency_limits",
    "cache_entries",
    "plugins",
];
