//! `weir tenant create|ls|delete` and `weir token create|ls|revoke`: what an operator
//! with the store in reach manages.

use clap::Subcommand;
use serde_json::json;
use weir_core::{Clock, SystemClock, TenantId, Timestamp, TokenScope};
use weir_store::{NewToken, TenantDeletion, TenantRecord, TokenRecord};

use crate::Failure;
use crate::store::StoreLocation;

/// The largest weight a tenant may have.
const MAX_WEIGHT: u32 = 1000;

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Make a tenant: its runs, plugins, cache and limits are its own, and once one
    /// exists every API call needs a token.
    Create {
        name: String,
        /// Its share of the workers when tenants compete for them (1 to 1000).
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// List the tenants, their weights and quotas.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's weight, quotas or grant ceilings (`none` lifts a quota).
    Set(Box<SetArgs>),
    /// What a tenant uses now, against each of its quotas.
    Usage {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant and everything it owns (its runs must have ended).
    Delete {
        name: String,
        /// Required: the deletion cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct SetArgs {
    name: String,
    /// Its share of the workers when tenants compete for them (1 to 1000).
    #[arg(long)]
    weight: Option<u32>,
    /// Task runs claimed by workers at once (a number, or `none`); more wait queued.
    #[arg(long, value_name = "N")]
    task_runs_in_progress: Option<String>,
    /// Memory limits of its claimed task runs, summed (`4GiB`, or `none`); a run that
    /// would pass it waits queued.
    #[arg(long, value_name = "SIZE")]
    memory_in_flight: Option<String>,
    /// The most memory one task run may use, whatever it asks (`256MiB`, or `none`); a
    /// run that needs more ends Crashed, naming the quota.
    #[arg(long, value_name = "SIZE")]
    memory_per_task: Option<String>,
    /// Runs it may submit through the API per minute (or `none`); past it a submission is
    /// refused (429) until the rate allows one.
    #[arg(long, value_name = "N")]
    runs_per_minute: Option<String>,
    /// Runs it may submit at once before the rate holds (or `none`: the rate itself).
    #[arg(long, value_name = "N")]
    runs_burst: Option<String>,
    /// The largest plugin it may upload (`10MiB`, or `none`).
    #[arg(long, value_name = "SIZE")]
    plugin_size: Option<String>,
    /// Sets the tenant's grant ceilings: a host directory its runs may be granted (and
    /// below it; `:rw` to write), repeatable. Any `--allow-…` replaces its ceilings.
    #[arg(long = "allow-dir", value_name = "PATH[:rw]")]
    allow_dirs: Vec<String>,
    /// An environment variable its runs may be granted (repeatable).
    #[arg(long = "allow-env", value_name = "NAME")]
    allow_env: Vec<String>,
    /// An HTTP host its runs may be granted (repeatable; `*` for any).
    #[arg(long = "allow-http", value_name = "HOST")]
    allow_http: Vec<String>,
    /// Its runs may be granted nothing at all (a ceiling of no grants).
    #[arg(long, conflicts_with_all = ["allow_dirs", "allow_env", "allow_http", "no_ceilings"])]
    grant_nothing: bool,
    /// Lifts its ceilings: only the workers' hold.
    #[arg(long, conflicts_with_all = ["allow_dirs", "allow_env", "allow_http"])]
    no_ceilings: bool,
}

/// A quota as given: `none`, or a value `parse` reads.
fn quota<T>(
    text: Option<&str>,
    current: Option<T>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Failure> {
    match text {
        None => Ok(current),
        Some("none") => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .map_err(|error| Failure::usage(anyhow::anyhow!(error))),
    }
}

fn describe_ceilings(ceilings: Option<&weir_core::Grants>) -> String {
    match ceilings {
        None => "any the workers allow".to_owned(),
        Some(grants) if grants.describe().is_empty() => "none".to_owned(),
        Some(grants) => grants.describe().join(", "),
    }
}

fn describe_quota(quota: Option<u64>, size: bool) -> String {
    match (quota, size) {
        (None, _) => "none".to_owned(),
        (Some(value), true) => weir_core::format_size(value),
        (Some(value), false) => value.to_string(),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make an API token of the tenant `--tenant` names; its text is printed once and
    /// never stored.
    Create {
        /// read: look; run: also submit, cancel and resume runs and upload plugins;
        /// admin: also change limits and clear the cache.
        #[arg(long, value_parser = parse_scope)]
        scope: TokenScope,
        /// How long it lets its holder in (`30d`, `12h`); forever when left out.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the tokens (not their text) of the tenant `--tenant` names.
    Ls {
        /// Of every tenant.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (`tok_…`): it lets nobody in from then on.
    Revoke { id: String },
}

fn parse_scope(text: &str) -> Result<TokenScope, String> {
    TokenScope::parse(text)
        .ok_or_else(|| format!("`{text}` is not a scope: use read, run or admin"))
}

/// The tenant of that name, or a usage error saying there is none.
async fn existing(store: &dyn weir_store::Store, name: &TenantId) -> Result<TenantRecord, Failure> {
    store
        .tenant_record(name)
        .await
        .map_err(Failure::internal)?
        .ok_or_else(|| Failure::usage(weir_store::StoreError::UnknownTenant(name.to_string())))
}

fn tenant_name(text: &str) -> Result<TenantId, Failure> {
    TenantId::parse(text).map_err(Failure::usage)
}

fn describe_time(at: Timestamp) -> String {
    at.to_string()
}

pub(crate) async fn tenant(
    location: &StoreLocation,
    command: TenantCommand,
) -> Result<u8, Failure> {
    let store = location.open_as_operator().await?;
    match command {
        TenantCommand::Create { name, weight } => {
            let name = tenant_name(&name)?;
            if !(1..=MAX_WEIGHT).contains(&weight) {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--weight {weight} is out of range: give 1 to {MAX_WEIGHT}"
                )));
            }
            let created = store
                .create_tenant(&TenantRecord {
                    name: name.clone(),
                    weight,
                    created: SystemClock.now(),
                    quotas: Default::default(),
                    ceilings: None,
                })
                .await
                .map_err(Failure::internal)?;
            if !created {
                return Err(Failure::usage(anyhow::anyhow!(
                    "a tenant named `{name}` exists already"
                )));
            }
            println!("created tenant `{name}` (weight {weight})");
            println!(
                "give it a token: weir token create --tenant {name} --scope run (every API call now needs one)"
            );
        }
        TenantCommand::Ls { json } => {
            let tenants = store.tenants().await.map_err(Failure::internal)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&tenants).map_err(Failure::internal)?
                );
            } else {
                for tenant in tenants {
                    let quotas = &tenant.quotas;
                    println!(
                        "{:<24} weight {:<5} task runs in progress {:<6} memory in flight {:<10} memory per task {}",
                        tenant.name,
                        tenant.weight,
                        describe_quota(quotas.task_runs_in_progress.map(u64::from), false),
                        describe_quota(quotas.memory_in_flight_bytes, true),
                        describe_quota(quotas.memory_per_task_bytes, true),
                    );
                }
            }
        }
        TenantCommand::Set(args) => {
            let name = tenant_name(&args.name)?;
            let tenant = existing(store.as_ref(), &name).await?;
            let weight = args.weight.unwrap_or(tenant.weight);
            if !(1..=MAX_WEIGHT).contains(&weight) {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--weight {weight} is out of range: give 1 to {MAX_WEIGHT}"
                )));
            }
            let count = |text: &str| {
                text.parse::<u32>()
                    .map_err(|_| format!("`{text}` is not a whole number (or `none`)"))
            };
            let size = |text: &str| weir_core::parse_size(text);
            let old = &tenant.quotas;
            let quotas = weir_store::Quotas {
                task_runs_in_progress: quota(
                    args.task_runs_in_progress.as_deref(),
                    old.task_runs_in_progress,
                    count,
                )?,
                memory_in_flight_bytes: quota(
                    args.memory_in_flight.as_deref(),
                    old.memory_in_flight_bytes,
                    size,
                )?,
                memory_per_task_bytes: quota(
                    args.memory_per_task.as_deref(),
                    old.memory_per_task_bytes,
                    size,
                )?,
                runs_per_minute: quota(
                    args.runs_per_minute.as_deref(),
                    old.runs_per_minute,
                    count,
                )?,
                runs_burst: quota(args.runs_burst.as_deref(), old.runs_burst, count)?,
                plugin_bytes: quota(args.plugin_size.as_deref(), old.plugin_bytes, size)?,
            };
            let allows = !args.allow_dirs.is_empty()
                || !args.allow_env.is_empty()
                || !args.allow_http.is_empty();
            let ceilings = if args.no_ceilings {
                None
            } else if args.grant_nothing {
                Some(weir_core::Grants::default())
            } else if allows {
                Some(crate::worker::grants_allowed(
                    &args.allow_dirs,
                    &args.allow_env,
                    &args.allow_http,
                )?)
            } else {
                tenant.ceilings.clone()
            };
            let settings = weir_store::TenantSettings { quotas, ceilings };
            store
                .update_tenant(&name, weight, &settings)
                .await
                .map_err(Failure::internal)?;
            let quotas = settings.quotas;
            println!(
                "tenant `{name}`: weight {weight}, task runs in progress {}, memory in flight {}, memory per task {}",
                describe_quota(quotas.task_runs_in_progress.map(u64::from), false),
                describe_quota(quotas.memory_in_flight_bytes, true),
                describe_quota(quotas.memory_per_task_bytes, true),
            );
            println!(
                "  grants its runs may have: {}",
                describe_ceilings(settings.ceilings.as_ref())
            );
        }
        TenantCommand::Usage { name, json } => {
            let name = tenant_name(&name)?;
            let tenant = existing(store.as_ref(), &name).await?;
            let usage = store
                .tenant_usage(&name, SystemClock.now())
                .await
                .map_err(Failure::internal)?;
            if json {
                println!(
                    "{}",
                    json!({"tenant": name, "quotas": tenant.quotas, "ceilings": tenant.ceilings, "usage": usage})
                );
            } else {
                let quotas = &tenant.quotas;
                println!("tenant `{name}` (weight {})", tenant.weight);
                println!(
                    "  task runs in progress  {:>10} of {}",
                    usage.task_runs_in_progress,
                    describe_quota(quotas.task_runs_in_progress.map(u64::from), false)
                );
                println!(
                    "  memory in flight       {:>10} of {}",
                    weir_core::format_size(usage.memory_in_flight_bytes),
                    describe_quota(quotas.memory_in_flight_bytes, true)
                );
                println!(
                    "  memory per task        {:>10} at most {}",
                    "",
                    describe_quota(quotas.memory_per_task_bytes, true)
                );
                println!("  queued runs            {:>10}", usage.queued);
                println!(
                    "  runs submitted         {:>10} at most {} a minute ({} at once)",
                    "",
                    describe_quota(quotas.runs_per_minute.map(u64::from), false),
                    describe_quota(
                        quotas.runs_burst.or(quotas.runs_per_minute).map(u64::from),
                        false
                    )
                );
                println!(
                    "  plugin size            {:>10} at most {}",
                    "",
                    describe_quota(quotas.plugin_bytes, true)
                );
                println!(
                    "  grants                 {:>10} {}",
                    "",
                    describe_ceilings(tenant.ceilings.as_ref())
                );
            }
        }
        TenantCommand::Delete { name, yes } => {
            let name = tenant_name(&name)?;
            if !yes {
                return Err(Failure::usage(anyhow::anyhow!(
                    "deleting tenant `{name}` deletes its runs, logs, plugins, cache and tokens for good: add --yes"
                )));
            }
            match store
                .delete_tenant(&name)
                .await
                .map_err(Failure::internal)?
            {
                TenantDeletion::Deleted(deleted) => println!(
                    "deleted tenant `{name}`: {} flow runs, {} task runs, {} tokens",
                    deleted.flow_runs, deleted.task_runs, deleted.tokens
                ),
                TenantDeletion::NotFound => {
                    return Err(Failure::usage(weir_store::StoreError::UnknownTenant(
                        name.to_string(),
                    )));
                }
                TenantDeletion::Default => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "the default tenant cannot be deleted"
                    )));
                }
                TenantDeletion::Busy { unfinished } => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "tenant `{name}` has {unfinished} runs that have not ended: cancel them first (weir --tenant {name} runs cancel ID)"
                    )));
                }
            }
        }
    }
    Ok(0)
}

fn token_json(token: &TokenRecord) -> serde_json::Value {
    json!({
        "id": token.id,
        "tenant": token.tenant,
        "scope": token.scope,
        "created": token.created,
        "expires": token.expires,
        "revoked": token.revoked,
        "live": token.is_live(SystemClock.now()),
    })
}

pub(crate) async fn token(location: &StoreLocation, command: TokenCommand) -> Result<u8, Failure> {
    let store = location.open_as_operator().await?;
    let now = SystemClock.now();
    match command {
        TokenCommand::Create {
            scope,
            expires,
            json,
        } => {
            let tenant = location.tenant.clone();
            let expires = match expires {
                Some(text) => {
                    let lasting = weir_core::parse_duration(&text).map_err(Failure::usage)?;
                    Some(now.saturating_add(lasting))
                }
                None => None,
            };
            let (text, token) =
                NewToken::generate(&tenant, scope, now, expires).map_err(|error| {
                    Failure::internal(anyhow::anyhow!("no random numbers: {error}"))
                })?;
            store
                .create_token(&token)
                .await
                .map_err(|error| match error {
                    weir_store::StoreError::UnknownTenant(_) => Failure::usage(error),
                    error => Failure::internal(error),
                })?;
            if json {
                let mut report = token_json(&token.record);
                report["token"] = json!(text);
                println!("{report}");
            } else {
                println!("{text}");
                eprintln!(
                    "token {} of tenant `{tenant}` ({scope}{}): shown this once, keep it secret",
                    token.record.id,
                    match expires {
                        Some(at) => format!(", expires {}", describe_time(at)),
                        None => String::new(),
                    }
                );
            }
        }
        TokenCommand::Ls { all, json } => {
            let tokens = store
                .tokens((!all).then_some(&location.tenant))
                .await
                .map_err(Failure::internal)?;
            if json {
                let tokens: Vec<_> = tokens.iter().map(token_json).collect();
                println!("{}", serde_json::Value::from(tokens));
            } else {
                for token in tokens {
                    let status = match (token.revoked, token.is_live(now)) {
                        (Some(at), _) => format!("revoked {}", describe_time(at)),
                        (None, false) => "expired".to_owned(),
                        (None, true) => match token.expires {
                            Some(at) => format!("expires {}", describe_time(at)),
                            None => "live".to_owned(),
                        },
                    };
                    println!(
                        "{}  {:<24} {:<6} {status}",
                        token.id, token.tenant, token.scope
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            if !store
                .revoke_token(&id, now)
                .await
                .map_err(Failure::internal)?
            {
                return Err(Failure::usage(anyhow::anyhow!(
                    "no live token with id `{id}` (weir token ls lists them)"
                )));
            }
            println!("revoked token {id}");
        }
    }
    Ok(0)
}
