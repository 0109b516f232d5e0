//! weir's shared store: PostgreSQL, for many `weir` processes on many machines, a
//! server, and (soon) workers.
//!
//! Writes go to a writer thread with a connection of its own that commits whatever is
//! queued in one transaction, pipelined (see `writer.rs`): recording a run costs the
//! caller a channel send, as with the SQLite store, and the semantics are the same —
//! writes apply in order, a failed operation leaves nothing behind and is reported by
//! the next flush, reads see this store's earlier writes. Reads and answered requests
//! (slots, limits, owners) use a pool of connections; a concurrency slot is taken under
//! a row lock on its limit, so limits hold across machines.
//!
//! ```no_run
//! # async fn example() -> weir_store::StoreResult<()> {
//! use weir_store::{History, TaskRunFilter};
//! let store = weir_store_postgres::PostgresStore::connect("postgres://weir@localhost/weir").await?;
//! let runs = store.task_runs(&TaskRunFilter::default()).await?;
//! # Ok(()) }
//! ```

mod history;
mod leases;
mod queue;
mod recorder;
mod results;
mod rows;
mod schema;
mod tenants;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use weir_core::TenantId;
use weir_store::{PendingEntries, Store, StoreError, StoreResult};

use writer::Writer;

/// Connections the pool keeps for reads and answered requests.
const POOL_SIZE: usize = 16;

/// The PostgreSQL store, acting as one tenant ([`Store::for_tenant`] gives the same
/// store as another).
pub struct PostgresStore {
    shared: Arc<Shared>,
    tenant: TenantId,
}

/// What every tenant's handle of one store shares.
struct Shared {
    pool: deadpool_postgres::Pool,
    writer: Writer,
    pending_cache: PendingEntries,
    location: String,
    /// Wakes idle workers and waiting drivers (LISTEN), started by the first wait.
    wakeups: queue::Wakeups,
    /// The tenants' passes, for fair claims.
    fair: weir_store::FairShare,
}

/// The server setting every connection of the store is opened with.
const GENERIC_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`,
    /// or any form libpq's URLs take, `?host=/run/postgresql` for a socket) and brings
    /// its schema up to date, creating it in an empty database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let location = redact_url(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|error| {
            StoreError::backend(format!("reading the store URL {location}"), error)
        })?;
        // The store's statements run thousands of times, with arrays of any length:
        // planned once for all (a generic plan) rather than again at every execution,
        // which was most of the server's work under a busy queue. Limits are written in
        // the statements' text, where one plan for any limit would sort every row.
        let options = match config.get_options() {
            Some(options) if !options.is_empty() => format!("{options} {GENERIC_PLANS}"),
            _ => GENERIC_PLANS.to_owned(),
        };
        config.options(&options);
        // The writer's runtime: its connection is driven there, whatever runtime (or
        // thread) the caller is on.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| StoreError::backend("starting the store's writer runtime", error))?;
        let connect = {
            let config = config.clone();
            let handle = runtime.handle().clone();
            move || -> futures::future::BoxFuture<'static, Result<tokio_postgres::Client, tokio_postgres::Error>> {
                let (config, handle) = (config.clone(), handle.clone());
                Box::pin(async move {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    handle.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::error!("the store's writer connection failed: {error}");
                        }
                    });
                    Ok(client)
                })
            }
        };
        let listen_config = config.clone();
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|error| StoreError::backend("making the store's connection pool", error))?;
        let newer = location.clone();
        let prepare: writer::Prepare = Box::new(move |client| {
            Box::pin(async move {
                let found = schema::prepare(client).await.map_err(|error| {
                    StoreError::backend("preparing the store's schema", describe(&error))
                })?;
                // Refused before the writer prepares statements a newer schema may break.
                if found > schema::VERSION {
                    return Err(StoreError::NewerSchema {
                        path: newer,
                        found,
                        known: schema::VERSION,
                    });
                }
                Ok(())
            })
        });
        // The caller says which store (the CLI: "opening the store URL").
        let writer = Writer::start(runtime, Box::new(connect), prepare).await?;
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                pool,
                writer,
                pending_cache: PendingEntries::default(),
                location,
                wakeups: queue::Wakeups::new(listen_config),
                fair: Default::default(),
            }),
            tenant: TenantId::default_tenant(),
        })
    }

    /// The tenant this handle acts as, for the SQL it binds.
    pub(crate) fn tenant(&self) -> &str {
        self.tenant.as_str()
    }

    /// A pooled connection, once this store's queued writes are committed (so that a
    /// read sees them).
    async fn read(&self) -> StoreResult<deadpool_postgres::Object> {
        self.shared.writer.wait().await?;
        self.connection().await
    }

    /// A pooled connection, without waiting for queued writes.
    async fn connection(&self) -> StoreResult<deadpool_postgres::Object> {
        self.shared.pool.get().await.map_err(|error| {
            StoreError::backend(
                format!("connecting to the store {}", self.shared.location),
                error,
            )
        })
    }
}

impl Store for PostgresStore {
    fn location(&self) -> String {
        self.shared.location.clone()
    }

    fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    fn for_tenant(&self, tenant: &TenantId) -> Arc<dyn Store> {
        Arc::new(PostgresStore {
            shared: self.shared.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wakeups.stop();
        self.writer.shut_down();
    }
}

/// A database error with the server's own message and hint, not only its code.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    use tokio_postgres::error::SqlState;
    match error.as_db_error() {
        Some(db) if db.code() == &SqlState::INVALID_CATALOG_NAME => format!(
            "{}: create it first (`createdb --owner USER DATABASE`, see the README's \"The store\")",
            db.message()
        ),
        Some(db) => match db.hint() {
            Some(hint) => format!("{} ({})", db.message(), hint),
            None => db.message().to_owned(),
        },
        None => {
            let mut text = error.to_string();
            if let Some(source) = std::error::Error::source(error) {
                text.push_str(": ");
                text.push_str(&source.to_string());
            }
            text
        }
    }
}

/// A store error from a database error, with what was being done.
pub(crate) fn backend(action: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |error| StoreError::backend(action, describe(&error))
}

/// The URL without its password, for messages: `postgres://weir:***@db/weir`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://weir:secret@db:5432/weir?sslmode=disable"),
            "postgres://weir:***@db:5432/weir?sslmode=disable"
        );
        assert_eq!(
            super::redact_url("postgres://weir@db/weir"),
            "postgres://weir@db/weir"
        );
        assert_eq!(
            super::redact_url("postgresql:///weir?host=/run/postgresql"),
            "postgresql:///weir?host=/run/postgresql"
        );
    }
}
