//! The componentizers, installed on first use into a tools directory at pinned versions.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{BuildError, BuildOptions, program_runs, run_step};

/// componentize-py from PyPI: CPython and the app, snapshotted into one component.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// componentize-js from npm: SpiderMonkey (StarlingMonkey) and the app, snapshotted.
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// rolldown from npm, which bundles a plugin's modules into the one file componentize-js takes
/// (the version componentize-js's own jco depends on).
pub const ROLLDOWN_VERSION: &str = "1.3.2";

/// Marks an installation that finished; a directory without it is removed and redone.
const COMPLETE_MARKER: &str = ".weir-complete";

/// The `componentize-py` program, installed into a virtual environment under `tools` when missing.
pub(crate) fn componentize_py(tools: &Path, options: &BuildOptions) -> Result<PathBuf, BuildError> {
    let venv = tools.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let program = venv.join("bin").join("componentize-py");
    install_once(tools, &venv, || {
        let python = program_from_env("WEIR_PYTHON", "python3");
        if !program_runs(&python) {
            return Err(BuildError::ToolMissing {
                tool: python.display().to_string(),
                hint: "a Python plugin is built with componentize-py, which is installed with pip; \
                       install Python 3 with its venv module (e.g. `apt-get install python3 python3-venv`) \
                       or point WEIR_PYTHON at a python3"
                    .into(),
            });
        }
        options.say(&format!(
            "installing componentize-py {COMPONENTIZE_PY_VERSION} into {} (once)",
            venv.display()
        ));
        run_step(
            "creating a Python virtual environment (is python3's venv module installed?)",
            Command::new(&python).arg("-m").arg("venv").arg(&venv),
        )?;
        run_step(
            &format!("pip install componentize-py=={COMPONENTIZE_PY_VERSION}"),
            Command::new(venv.join("bin").join("python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}")),
        )?;
        Ok(())
    })?;
    Ok(program)
}

/// The directory holding `node_modules/@bytecodealliance/componentize-js`, installed with npm
/// under `tools` when missing, and the `node` program to run it with.
pub(crate) fn componentize_js(
    tools: &Path,
    options: &BuildOptions,
) -> Result<(PathBuf, PathBuf), BuildError> {
    let prefix = tools.join(format!("componentize-js-{COMPONENTIZE_JS_VERSION}"));
    let node = program_from_env("WEIR_NODE", "node");
    let node_hint = "a JavaScript plugin is built with componentize-js, which runs on Node.js (18 or newer); \
                     install Node.js and npm (e.g. `apt-get install nodejs npm`) or point WEIR_NODE and WEIR_NPM at them";
    if !program_runs(&node) {
        return Err(BuildError::ToolMissing {
            tool: node.display().to_string(),
            hint: node_hint.into(),
        });
    }
    install_once(tools, &prefix, || {
        let npm = program_from_env("WEIR_NPM", "npm");
        if !program_runs(&npm) {
            return Err(BuildError::ToolMissing {
                tool: npm.display().to_string(),
                hint: node_hint.into(),
            });
        }
        options.say(&format!(
            "installing componentize-js {COMPONENTIZE_JS_VERSION} into {} (once)",
            prefix.display()
        ));
        fs_err::create_dir_all(&prefix)?;
        run_step(
            &format!(
                "npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION} rolldown@{ROLLDOWN_VERSION}"
            ),
            Command::new(&npm)
                .arg("install")
                .arg("--prefix")
                .arg(&prefix)
                .args([
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--save-exact",
                ])
                .args(NPM_NETWORK)
                .arg(format!(
                    "@bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}"
                )),
        )?;
        Ok(())
    })?;
    Ok((prefix, node))
}

/// How npm treats the network: packages it has cached are used without asking the
/// registry again, and a stalled request is given up (and retried) after a minute
/// rather than hanging the build (a CI run once waited on one for over ten minutes).
pub const NPM_NETWORK: [&str; 3] = [
    "--prefer-offline",
    "--fetch-timeout=60000",
    "--fetch-retries=4",
];

/// `$variable` when set, else `default` (looked up on PATH when run).
fn program_from_env(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Runs `install` to fill `dir` unless a finished installation is there, holding a lock on the
/// tools directory so that parallel builds install once.
fn install_once(
    tools: &Path,
    dir: &Path,
    install: impl FnOnce() -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let marker = dir.join(COMPLETE_MARKER);
    if marker.is_file() {
        return Ok(());
    }
    fs_err::create_dir_all(tools)?;
    let lock = File::create(tools.join(".lock"))?;
    lock.lock()?;
    if marker.is_file() {
        return Ok(()); // another build installed it while this one waited
    }
    if dir.exists() {
        fs_err::remove_dir_all(dir)?; // an installation that was interrupted
    }
    let result = install();
    if result.is_ok() {
        fs_err::write(&marker, "")?;
    } else if dir.exists() {
        let _ = fs_err::remove_dir_all(dir);
    }
    result
}
