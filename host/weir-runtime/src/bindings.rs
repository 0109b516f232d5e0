//! Host-side bindings of the `weir:task` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "weir:task/plugin",
    exports: { default: async },
});

pub use weir::task::types::{
    CachePolicy as WitCachePolicy, LogLevel as WitLogLevel, RunContext as WitRunContext,
    TaskError as WitTaskError, TaskInfo as WitTaskInfo,
};
