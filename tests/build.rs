//! Builds the test plugins in `plugins/` (a separate workspace) for wasm32-wasip2, from
//! source, once per change, and tells the tests where the `.wasm` files are.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ is inside the repository");
    let plugins = root.join("plugins");
    watch(&plugins.join("Cargo.toml"));
    watch(&plugins.join("Cargo.lock"));
    for entry in std::fs::read_dir(&plugins)
        .expect("plugins/ exists")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|name| name != "target") {
            watch(&path);
        }
    }
    watch(&root.join("guest-sdk/rust"));
    watch(&root.join("wit"));

    let target_dir = plugins.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings (flags for the host target, clippy as the compiler
    // wrapper) must not leak into the wasm build.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "RUSTC",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .expect("running cargo to build the test plugins");
    assert!(
        status.success(),
        "building the test plugins in plugins/ failed"
    );

    let artifacts = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=WEIR_TEST_PLUGINS={}", artifacts.display());
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
