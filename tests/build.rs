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
        let name = path.file_name().unwrap_or_default();
        if name == "python" || name == "js" {
            // `weir build` writes dist/ and .weir-build/ beside the sources: not watched.
            watch_sources(&path);
        } else if path.is_dir() && name != "target" {
            watch(&path);
        }
    }
    watch(&root.join("guest-sdk"));
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

    build_polyglot_plugins(&plugins, &target_dir.join("polyglot"));
}

/// Builds the Python and JavaScript plugins in `plugins/python` and `plugins/js` with
/// weir-build, as `weir build` would, installing the componentizers once into
/// `<target>/weir-tools` (shared with the tests of `weir build`). Nothing is written into the
/// sources: the components go to `built` (where the examples find them), the rest to OUT_DIR.
fn build_polyglot_plugins(plugins: &Path, built: &Path) {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let tools = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory")
        .join("weir-tools");
    for language in ["python", "js"] {
        let Ok(entries) = std::fs::read_dir(plugins.join(language)) else {
            continue;
        };
        for entry in entries.flatten() {
            let project = weir_build::Project::open(&entry.path())
                .unwrap_or_else(|error| panic!("{}: {error}", entry.path().display()));
            let options = weir_build::BuildOptions {
                tools_dir: Some(tools.clone()),
                work_dir: Some(out_dir.join("work").join(&project.name)),
                output: Some(built.join(format!("{}.wasm", project.name))),
                // Only the one-time installs are worth a warning line.
                progress: Some(&|line: &str| {
                    if line.starts_with("installing") {
                        println!("cargo:warning=weir build: {line}");
                    }
                }),
            };
            weir_build::build(&project, &options)
                .unwrap_or_else(|error| panic!("building {}: {error}", entry.path().display()));
        }
    }
    println!(
        "cargo:rustc-env=WEIR_TEST_POLYGLOT_PLUGINS={}",
        built.display()
    );
    println!("cargo:rustc-env=WEIR_TEST_TOOLS_DIR={}", tools.display());
}

/// Watches the files under `dir` but what builds write there.
fn watch_sources(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if [".weir-build", "dist", "node_modules", "__pycache__"]
            .contains(&name.to_str().unwrap_or_default())
        {
            continue;
        }
        if path.is_dir() {
            watch_sources(&path);
        } else {
            watch(&path);
        }
    }
}

fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
