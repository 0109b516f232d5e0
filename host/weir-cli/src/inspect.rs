use clap::Args;
use std::path::PathBuf;
use weir_core::{CachePolicy, RetryDelays, format_duration};

use crate::Failure;
use crate::store::StoreLocation;
use crate::task_run::{open_runner, runner_failure};

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The plugin: a `.wasm` component.
    plugin: PathBuf,
    /// Print the plugin's digest and tasks as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(store: &StoreLocation, args: InspectArgs) -> Result<u8, Failure> {
    let runner = open_runner(store, None).await?;
    let plugin = runner
        .load_plugin(&args.plugin)
        .await
        .map_err(runner_failure)?;
    if args.json {
        let report = serde_json::json!({
            "name": plugin.name(),
            "digest": plugin.digest(),
            "size_bytes": plugin.size_bytes(),
            "tasks": plugin.tasks(),
        });
        println!("{report:#}");
        return Ok(0);
    }
    println!("plugin  {}", plugin.name());
    println!("digest  {}", plugin.digest());
    println!("size    {} bytes", plugin.size_bytes());
    for task in plugin.tasks() {
        println!();
        let version = task
            .version
            .as_deref()
            .map(|version| format!(" (version {version})"))
            .unwrap_or_default();
        println!("task {}{version}", task.name);
        if let Some(description) = &task.description {
            for line in description.lines() {
                println!("  {line}");
            }
        }
        if !task.tags.is_empty() {
            println!("  tags        {}", task.tags.join(", "));
        }
        let delays = match &task.retry.delays {
            RetryDelays::PerRetry(delays) if delays.is_empty() => String::new(),
            RetryDelays::PerRetry(delays) => format!(
                ", delays {}",
                delays
                    .iter()
                    .map(|delay| format_duration(*delay))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            RetryDelays::Exponential { base, max } => format!(
                ", exponential from {}{}",
                format_duration(*base),
                max.map(|max| format!(" up to {}", format_duration(max)))
                    .unwrap_or_default()
            ),
        };
        println!("  retries     {}{delays}", task.retry.retries);
        if let Some(timeout) = task.timeout {
            println!("  timeout     {}", format_duration(timeout));
        }
        if task.cache_policy != CachePolicy::None {
            let expiration = task
                .cache_expiration
                .map(|expiration| format!(", expires after {}", format_duration(expiration)))
                .unwrap_or_default();
            println!("  cache       {}{expiration}", task.cache_policy.as_str());
        }
        if let Some(template) = &task.run_name {
            println!("  run name    {template}");
        }
        println!(
            "  log prints  {}",
            if task.log_prints { "yes" } else { "no" }
        );
        if !task.needs.is_empty() {
            let needs: Vec<String> = task.needs.iter().map(ToString::to_string).collect();
            println!("  needs       {}", needs.join(", "));
        }
    }
    Ok(0)
}
