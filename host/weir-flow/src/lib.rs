//! weir flows: a graph of task nodes (and subflows) with parameters, references between
//! nodes, maps, and per-node overrides of the tasks' defaults. Built in Rust with
//! [`Flow`]'s builder, or loaded from a versioned TOML file ([`Flow::load`]); the loader
//! uses the same types, and [`Flow::validate`] checks either before anything runs.
//!
//! ```
//! use serde_json::json;
//! use weir_flow::{Flow, ParameterType};
//!
//! let flow = Flow::new("diamond")
//!     .parameter("x", ParameterType::Integer, Some(json!(3)))
//!     .plugin("arith", "arith.wasm")
//!     .task("left", "arith.add", json!({"a": "${params.x}", "b": 1}))
//!     .task("right", "arith.multiply", json!({"a": "${params.x}", "b": 2}))
//!     .task("join", "arith.add", json!({"a": "${left}", "b": "${right}"}))
//!     .output("join");
//! let order = flow.validate().unwrap();
//! assert_eq!(order, ["left", "right", "join"]);
//! ```

mod file;
mod model;
mod names;
pub mod reference;
pub mod schema;
mod validate;

#[cfg(test)]
mod properties;

pub use file::FORMAT_VERSION;
pub use model::{Flow, FlowOutput, Node, NodeKind, Parameter, ParameterType};
pub use names::flow_run_name;
pub use validate::FlowError;

#[cfg(test)]
mod tests;
