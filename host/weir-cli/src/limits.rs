//! `weir concurrency-limit create|ls|read|delete|reset`.

use clap::Subcommand;
use serde_json::json;
use weir_core::{Clock, SystemClock};
use weir_store::ConcurrencyLimit;

use crate::Failure;
use crate::store::StoreLocation;

#[derive(Debug, Subcommand)]
pub(crate) enum LimitCommand {
    /// Limit task runs with TAG to N at once (0 aborts them); changes an existing limit.
    Create { tag: String, limit: u32 },
    /// List limits and the task runs holding their slots.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one limit.
    Read {
        tag: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a limit.
    Delete { tag: String },
    /// Free every slot of a limit (e.g. after runs were lost).
    Reset { tag: String },
}

fn describe(limit: &ConcurrencyLimit) -> String {
    let holders = if limit.holders.is_empty() {
        String::new()
    } else {
        format!(" ({})", limit.holders.join(", "))
    };
    format!(
        "{:<20} {:>3} of {:<3} slots in use{holders}",
        limit.tag,
        limit.holders.len(),
        limit.limit
    )
}

pub(crate) async fn run(location: &StoreLocation, command: LimitCommand) -> Result<u8, Failure> {
    let store = location.open().await?;
    // Slots held by a process that died are freed before they are shown.
    crate::runs::reap_orphans(store.as_ref()).await?;
    let now = SystemClock.now();
    match command {
        LimitCommand::Create { tag, limit } => {
            store
                .set_concurrency_limit(&tag, limit, now)
                .await
                .map_err(Failure::internal)?;
            println!("tag `{tag}` is limited to {limit} task runs at once");
        }
        LimitCommand::Ls { json } => {
            let limits = weir_runner::views::concurrency_limits(store.as_ref(), now)
                .await
                .map_err(Failure::internal)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&limits).map_err(Failure::internal)?
                );
            } else {
                for limit in &limits {
                    println!("{}", describe(limit));
                }
            }
        }
        LimitCommand::Read { tag, json } => {
            let limit = store
                .concurrency_limit(&tag, now)
                .await
                .map_err(Failure::internal)?
                .ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "no concurrency limit for tag `{tag}` (see `weir concurrency-limit ls`)"
                    ))
                })?;
            if json {
                println!("{}", json!(limit));
            } else {
                println!("{}", describe(&limit));
            }
        }
        LimitCommand::Delete { tag } => {
            if !store
                .delete_concurrency_limit(&tag)
                .await
                .map_err(Failure::internal)?
            {
                return Err(Failure::usage(anyhow::anyhow!(
                    "no concurrency limit for tag `{tag}`"
                )));
            }
            println!("removed the concurrency limit of tag `{tag}`");
        }
        LimitCommand::Reset { tag } => {
            let freed = store
                .reset_concurrency_limit(&tag)
                .await
                .map_err(Failure::internal)?;
            println!("freed {freed} slots of tag `{tag}`");
        }
    }
    store.flush().await.map_err(Failure::internal)?;
    Ok(0)
}
