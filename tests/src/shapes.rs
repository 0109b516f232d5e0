//! Flows of a given shape, and the process's memory, shared by the tests, the benchmarks and
//! weir-bench.

use serde_json::{Value, json};
use weir_core::TaskOverrides;
use weir_flow::{Flow, NodeKind};

use crate::plugin_path;

/// `count` nodes running `plugin.task` in a chain: each waits for the one before. `input(i)`
/// is node `t{i}`'s input.
pub fn chain(count: usize, plugin: &str, task: &str, input: impl Fn(usize) -> Value) -> Flow {
    let mut flow = Flow::new("chain").plugin(plugin, plugin_path(plugin));
    for i in 0..count {
        flow = flow.task(format!("t{i}"), &format!("{plugin}.{task}"), input(i));
        if i > 0 {
            flow = flow.with_last(|node| node.wait_for.push(format!("t{}", i - 1)));
        }
    }
    flow
}

/// One node mapping `arith.add` over `0..count` (one task run per element).
pub fn map_of_adds(count: usize) -> Flow {
    let values: Vec<usize> = (0..count).collect();
    Flow::new("scale")
        .plugin("arith", plugin_path("arith"))
        .task("add", "arith.add", json!({"a": values, "b": 1}))
        .with_last(|node| {
            if let NodeKind::Task { map, .. } = &mut node.kind {
                map.push("a".into());
            }
        })
}

/// `count` runs of `misbehave.sleepy` for `ms` each, mapped, tagged `db`.
pub fn tagged_sleepers(count: usize, ms: u64) -> Flow {
    Flow::new("limited")
        .plugin("misbehave", plugin_path("misbehave"))
        .task("sleep", "misbehave.sleepy", json!({"ms": vec![ms; count]}))
        .with_last(|node| {
            if let NodeKind::Task { map, overrides, .. } = &mut node.kind {
                map.push("ms".into());
                **overrides = TaskOverrides {
                    extra_tags: vec!["db".into()],
                    ..Default::default()
                };
            }
        })
}

/// Resident memory of this process now and at its peak, in MiB, from /proc.
pub fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
