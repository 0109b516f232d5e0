//! `weir new`, `weir build` and `weir task run`, from an empty directory, for each language;
//! and the errors of a build that cannot work.

use std::path::Path;
use std::process::{Command, Output};
use weir_tests::tools_dir;

fn weir(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .current_dir(dir)
        .args(args)
        .env_remove("WEIR_STORE")
        // Installed once by the test build, not once per project.
        .env("WEIR_TOOLS_DIR", tools_dir())
        // One target directory for every Rust project the tests create: dependencies compile once.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("OUT_DIR")).join("new-projects"),
        )
        .output()
        .expect("the weir binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Replaces `from` by `to` in a project's file, then builds the project.
fn build_with_edit(dir: &Path, project: &str, file: &str, from: &str, to: &str) -> Output {
    let path = dir.join(project).join(file);
    let source = std::fs::read_to_string(&path).unwrap();
    assert!(source.contains(from), "{file} of {project} has no `{from}`");
    std::fs::write(&path, source.replace(from, to)).unwrap();
    weir(dir, &["build", project])
}

/// The command failed with `code` and said `needle` on stderr.
fn assert_fails(output: &Output, code: i32, needle: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
}

/// The project's own unit test, as its README says to run it.
fn project_test(dir: &Path, language: &str) -> Output {
    let mut command = match language {
        "rust" => {
            let mut command = Command::new(env!("CARGO"));
            command.arg("test").arg("--quiet").env(
                "CARGO_TARGET_DIR",
                Path::new(env!("OUT_DIR")).join("new-projects"),
            );
            command
        }
        "python" => {
            let mut command = Command::new("python3");
            command.args(["-m", "unittest", "-q"]);
            command
        }
        _ => {
            let mut command = Command::new("node");
            command.arg("--test");
            command
        }
    };
    command
        .current_dir(dir)
        .output()
        .expect("the project's test runs")
}

fn new_build_and_run(language: &str) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("greeter-{language}");
    let created = weir(dir.path(), &["new", "--lang", language, &name]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let project = dir.path().join(&name);

    let tested = project_test(&project, language);
    assert!(
        tested.status.success(),
        "the new {language} project's own test fails:\n{}\n{}",
        text(&tested.stdout),
        text(&tested.stderr)
    );

    let built = weir(dir.path(), &["build", &name]);
    let stderr = text(&built.stderr);
    assert_eq!(built.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("implements weir:task/plugin with 1 task: hello"),
        "{stderr}"
    );
    let wasm = project.join("dist").join(format!("{name}.wasm"));
    assert_eq!(text(&built.stdout).trim(), wasm.display().to_string());

    let wasm = wasm.display().to_string();
    let ran = weir(
        dir.path(),
        &[
            "task",
            "run",
            &wasm,
            "--task",
            "hello",
            "--input",
            r#"{"name": "weir"}"#,
        ],
    );
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert_eq!(text(&ran.stdout), "\"Hello, weir!\"\n");
    assert!(
        text(&ran.stderr).contains("greeting weir"),
        "{}",
        text(&ran.stderr)
    );

    // The example's empty name is a fatal error: Failed after one attempt, exit code 1.
    let failed = weir(
        dir.path(),
        &[
            "task",
            "run",
            &wasm,
            "--task",
            "hello",
            "--input",
            r#"{"name": " "}"#,
            "--json",
        ],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let report: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(report["state"], "Failed");
    assert_eq!(report["attempts"], 1);
}

#[test]
fn a_new_rust_plugin_builds_and_runs() {
    new_build_and_run("rust");
}

#[test]
fn a_new_python_plugin_builds_and_runs() {
    new_build_and_run("python");
}

#[test]
fn a_new_javascript_plugin_builds_and_runs() {
    new_build_and_run("js");
}

#[test]
fn build_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails(&weir(dir.path(), &["build"]), 2, "is not a plugin project");

    assert_fails(
        &weir(dir.path(), &["new", "--lang", "python", "Bad_Name"]),
        2,
        "not a valid plugin name",
    );

    assert_fails(
        &weir(dir.path(), &["new", "--lang", "cobol", "x"]),
        2,
        "use rust, python or js",
    );

    // A Python project on a machine without python3, componentize-py not yet installed.
    assert_eq!(
        weir(dir.path(), &["new", "--lang", "python", "nopython"])
            .status
            .code(),
        Some(0)
    );
    let no_python = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .current_dir(dir.path())
        .args(["build", "nopython"])
        .env("WEIR_TOOLS_DIR", dir.path().join("fresh-tools"))
        .env("WEIR_PYTHON", dir.path().join("no-such-python3"))
        .output()
        .unwrap();
    assert_eq!(no_python.status.code(), Some(2));
    let stderr = text(&no_python.stderr);
    assert!(
        stderr.contains("no-such-python3 was not found") && stderr.contains("install Python 3"),
        "{stderr}"
    );

    // A JavaScript task with a misspelt option fails the build, naming it.
    assert_eq!(
        weir(dir.path(), &["new", "--lang", "js", "typo"])
            .status
            .code(),
        Some(0)
    );
    let typo = build_with_edit(dir.path(), "typo", "tasks.js", "retries: 2", "retrys: 2");
    assert_fails(&typo, 1, "componentize-js failed");
    assert_fails(&typo, 1, "unknown option `retrys`");

    // So does a Python one: the decorator runs when componentize-py snapshots the module.
    let negative = build_with_edit(
        dir.path(),
        "nopython",
        "tasks.py",
        "retries=2",
        "retries=-2",
    );
    assert_fails(&negative, 1, "componentize-py failed");
    assert_fails(&negative, 1, "retries must be an integer >= 0");
}
