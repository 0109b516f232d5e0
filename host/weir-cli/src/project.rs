//! `weir new` and `weir build`: plugin projects in Rust, Python or JavaScript.

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use weir_build::{BuildError, BuildOptions, Language, Project};

use crate::store::StoreLocation;
use crate::task_run::{open_runner, runner_failure};
use crate::{Failure, exit};

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The plugin's language: rust, python or js.
    #[arg(long, value_parser = parse_language)]
    lang: Language,
    /// The plugin's name (lowercase letters, digits and `-`); also its directory's.
    name: String,
    /// Where to create the project's directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The plugin project: a directory with Cargo.toml, pyproject.toml or package.json.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where componentize-py and componentize-js are installed on first use (default:
    /// `.weir-build/tools` in the project). Share one between projects to install once.
    #[arg(long, env = "WEIR_TOOLS_DIR")]
    tools_dir: Option<PathBuf>,
    /// Where to write the component (default: `dist/NAME.wasm` in the project).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn parse_language(text: &str) -> Result<Language, String> {
    Language::parse(text)
        .ok_or_else(|| format!("`{text}` is not a language weir builds: use rust, python or js"))
}

pub(crate) fn new(args: NewArgs) -> Result<u8, Failure> {
    let dir = weir_build::new_project(args.lang, &args.name, &args.dir).map_err(Failure::usage)?;
    let shown = dir.display();
    let test = match args.lang {
        Language::Rust => "cargo test",
        Language::Python => "python3 -m unittest",
        Language::JavaScript => "node --test",
    };
    eprintln!("created a {} plugin in {shown}", args.lang.name());
    eprintln!("  test it:  cd {shown} && {test}");
    eprintln!("  build it: weir build {shown}");
    eprintln!(
        "  run it:   weir task run {shown}/dist/{}.wasm --task hello --input '{{\"name\": \"you\"}}'",
        args.name
    );
    println!("{shown}");
    Ok(0)
}

pub(crate) async fn build(store: &StoreLocation, args: BuildArgs) -> Result<u8, Failure> {
    let started = Instant::now();
    let project = Project::open(&args.dir).map_err(Failure::usage)?;
    let tools_dir = args.tools_dir.clone();
    let output = args.output.clone();
    let building = project.clone();
    let output = tokio::task::spawn_blocking(move || {
        let progress = |line: &str| eprintln!("weir build: {line}");
        weir_build::build(
            &building,
            &BuildOptions {
                tools_dir,
                output,
                progress: Some(&progress),
                ..Default::default()
            },
        )
    })
    .await
    .context("the build thread panicked")
    .map_err(Failure::internal)?
    .map_err(build_failure)?;

    // The build only counts when weir accepts the result: the right world, tasks it can read.
    // Loading also compiles it into the store's cache, so the first run starts fast.
    let runner = open_runner(store, None).await?;
    let plugin = runner.load_plugin(&output).await.map_err(runner_failure)?;
    let names: Vec<&str> = plugin
        .tasks()
        .iter()
        .map(|task| task.name.as_str())
        .collect();
    eprintln!(
        "weir build: {} ({} plugin, {:.1} MB) implements weir:task/plugin with {} task{}: {} ({:.1}s)",
        output.display(),
        project.language.name(),
        plugin.size_bytes() as f64 / 1e6,
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    println!("{}", output.display());
    Ok(0)
}

fn build_failure(error: BuildError) -> Failure {
    let code = match error {
        BuildError::Step { .. } => exit::FAILED,
        BuildError::Io(_) => exit::INTERNAL,
        BuildError::Project(_) | BuildError::ToolMissing { .. } => exit::USAGE,
    };
    Failure {
        code,
        error: error.into(),
    }
}
