//! The `weir` command under test, as the CLI tests run it: in a directory, with the store
//! in its default place (`.weir` there) whatever the environment says.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub fn weir_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir-under-test"));
    // A user's environment: not the test command's store, nor its compiler wrapper (clippy,
    // which `weir build` of a Rust project would otherwise use).
    command
        .current_dir(dir)
        .args(args)
        .env_remove("WEIR_STORE")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    command
}

pub fn weir(dir: &Path, args: &[&str]) -> Output {
    weir_command(dir, args)
        .output()
        .expect("the weir binary runs")
}

/// Starts `weir` with its output captured, for a test that signals or kills it.
pub fn spawn_weir(dir: &Path, args: &[&str]) -> Child {
    weir_command(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weir binary starts")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
