//! A bare wasmtime instantiate+call of a plugin, the floor weir's overhead is measured
//! against, and the timing loop the benchmarks share.

use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weir:task/plugin",
});

/// The least a host must do to call the task: WASI with nothing granted, a host
/// interface that ignores logs.
struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl weir::task::types::Host for BareState {}

impl weir::task::host::Host for BareState {
    fn log(&mut self, _level: weir::task::types::LogLevel, _message: String) {}

    fn context(&mut self) -> weir::task::types::RunContext {
        weir::task::types::RunContext {
            flow_run_id: None,
            flow_run_name: None,
            task_run_id: String::new(),
            task_run_name: String::new(),
            task_name: String::new(),
            attempt: 1,
            tags: Vec::new(),
            parameters: "{}".into(),
        }
    }
}

/// Mean time per iteration of `body`, after a warm-up, including one `finish` at the end.
pub fn measure(iterations: u32, mut body: impl FnMut(), finish: impl Fn()) -> Duration {
    for _ in 0..(iterations / 10).max(1) {
        body();
    }
    finish();
    let started = Instant::now();
    for _ in 0..iterations {
        body();
    }
    finish();
    started.elapsed() / iterations
}

#[derive(Clone, Copy)]
pub enum Allocator {
    OnDemand,
    Pooling,
    /// Pooling with the settings weir uses: dirty pages found by PAGEMAP_SCAN and
    /// rewritten in place instead of returned with madvise.
    PoolingKeepResident,
}

/// Mean time of a bare wasmtime instantiate + `run(task, input)` of a component: what any host
/// must pay, with no orchestration, no history, no limits.
pub fn bare_call(
    allocator: Allocator,
    bytes: &[u8],
    task: &str,
    input: &str,
    iterations: u32,
) -> Duration {
    let mut config = Config::new();
    config.wasm_component_model(true);
    match allocator {
        Allocator::OnDemand => {}
        Allocator::Pooling => {
            config.allocation_strategy(InstanceAllocationStrategy::pooling());
        }
        Allocator::PoolingKeepResident => {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(16 << 20)
                .table_keep_resident(1 << 20);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
    }
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).unwrap();
    let pre = PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    measure(
        iterations,
        || {
            let mut store = Store::new(
                &engine,
                BareState {
                    wasi: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            let plugin = pre.instantiate(&mut store).unwrap();
            plugin
                .weir_task_task()
                .call_run(&mut store, task, input)
                .unwrap()
                .unwrap_or_else(|error| panic!("{task} failed: {error:?}"));
        },
        || {},
    )
}
