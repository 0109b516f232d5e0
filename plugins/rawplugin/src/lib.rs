//! A plugin written against the WIT directly, without the weir SDK, that breaks the contract:
//! its task's output is not JSON.

wit_bindgen::generate!({
    path: "../../wit",
    world: "weir:task/plugin",
});

use exports::weir::task::task::Guest;
use weir::task::types::{CachePolicy, TaskError, TaskInfo};

struct RawPlugin;

impl Guest for RawPlugin {
    fn info() -> Vec<TaskInfo> {
        vec![TaskInfo {
            name: "garbage".into(),
            description: Some("Returns text that is not JSON.".into()),
            version: None,
            tags: Vec::new(),
            retries: 0,
            retry_delays_ms: Vec::new(),
            retry_backoff: None,
            retry_jitter_factor: None,
            timeout_ms: None,
            cache_policy: CachePolicy::None,
            cache_expiration_ms: None,
            log_prints: true,
            run_name: None,
            input_schema: None,
            output_schema: None,
            needs: Vec::new(),
        }]
    }

    /// Whatever the task and input: an output that is not JSON.
    fn run(_task: String, _input: String) -> Result<String, TaskError> {
        Ok("this is {not json".into())
    }

    fn cache_key(_task: String, _input: String) -> Option<String> {
        None
    }
}

export!(RawPlugin);
