//! Loading plugins: clear errors for files that are not weir plugins, and the
//! compiled-component cache.

use weir_runtime::{LoadError, Runtime, RuntimeConfig};
use weir_tests::{plugin_path, shared_runtime};

#[tokio::test]
async fn a_file_that_is_not_wasm_is_refused() {
    let error = shared_runtime()
        .load_plugin_bytes("notes", b"these are not the bytes you are looking for")
        .await
        .unwrap_err();
    assert!(matches!(error, LoadError::NotWasm { .. }));
    assert!(
        error
            .to_string()
            .contains("notes is not a WebAssembly file")
    );
}

#[tokio::test]
async fn a_core_module_is_refused_with_advice() {
    // The smallest core module: magic and version 1.
    let error = shared_runtime()
        .load_plugin_bytes("core", b"\0asm\x01\0\0\0")
        .await
        .unwrap_err();
    assert!(matches!(error, LoadError::CoreModule { .. }));
    assert!(error.to_string().contains("wasm32-wasip2"), "{error}");
}

#[tokio::test]
async fn a_truncated_component_is_refused() {
    let bytes = std::fs::read(plugin_path("hello")).unwrap();
    let error = shared_runtime()
        .load_plugin_bytes("truncated", &bytes[..bytes.len() / 2])
        .await
        .unwrap_err();
    assert!(matches!(error, LoadError::Invalid { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("not a valid WebAssembly component")
    );
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    let error = shared_runtime()
        .load_plugin_file(&plugin_path("wrongworld"))
        .await
        .unwrap_err();
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("is not a weir plugin") && message.contains("weir:task/task@0.1.0"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_plugin_file_names_its_path() {
    let error = shared_runtime()
        .load_plugin_file("no/such/plugin.wasm".as_ref())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no/such/plugin.wasm"), "{error}");
}

#[tokio::test]
async fn compiled_components_are_reused_from_disk() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        compiled_cache_dir: Some(cache.path().to_owned()),
        pool_instances: 8,
        ..Default::default()
    };
    let first = Runtime::new(config.clone()).unwrap();
    let compiled = first.load_plugin_file(&plugin_path("arith")).await.unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().collect();
    assert_eq!(artifacts.len(), 1);
    let name = artifacts[0].file_name().into_string().unwrap();
    assert!(
        name.starts_with(compiled.digest().as_str()) && name.ends_with(".cwasm"),
        "{name}"
    );
    drop(first);

    // A new runtime (as in a new process) deserializes instead of compiling.
    let second = Runtime::new(config).unwrap();
    let started = std::time::Instant::now();
    let reused = second
        .load_plugin_file(&plugin_path("arith"))
        .await
        .unwrap();
    assert_eq!(reused.tasks(), compiled.tasks());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_damaged_compiled_artifact_is_replaced() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        compiled_cache_dir: Some(cache.path().to_owned()),
        pool_instances: 8,
        ..Default::default()
    };
    let runtime = Runtime::new(config.clone()).unwrap();
    runtime
        .load_plugin_file(&plugin_path("hello"))
        .await
        .unwrap();
    let artifact = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::write(&artifact, b"garbage").unwrap();
    let again = Runtime::new(config).unwrap();
    let plugin = again.load_plugin_file(&plugin_path("hello")).await.unwrap();
    assert_eq!(plugin.tasks()[0].name, "hello");
    assert!(
        std::fs::metadata(&artifact).unwrap().len() > 1000,
        "the artifact was rewritten"
    );
}

#[tokio::test]
async fn truncated_and_bit_flipped_plugins_load_or_fail_with_a_named_error() {
    let intact = std::fs::read(plugin_path("hostile")).unwrap();
    let seed = fastrand::u64(..);
    eprintln!("corruption seed: {seed}");
    let mut random = fastrand::Rng::with_seed(seed);
    for case in 0..48 {
        let mut bytes = intact.clone();
        if case % 2 == 0 {
            bytes.truncate(random.usize(0..bytes.len()));
        } else {
            for _ in 0..random.usize(1..8) {
                let at = random.usize(0..bytes.len());
                bytes[at] ^= 1 << random.u8(0..8);
            }
        }
        let name = format!("corrupt-{case}");
        match shared_runtime().load_plugin_bytes(&name, &bytes).await {
            // A flip in a string or a name can leave a working plugin.
            Ok(plugin) => assert!(!plugin.tasks().is_empty()),
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with(&name),
                    "seed {seed}, case {case}: {message}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_plugin_importing_what_the_host_lacks_names_the_import() {
    let error = shared_runtime()
        .load_plugin_file(&plugin_path("alien"))
        .await
        .unwrap_err();
    assert!(matches!(error, LoadError::MissingImport { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("alien needs imports this host does not provide:")
            && message.contains("acme:widgets/gadget@1.0.0"),
        "{message}"
    );
}
