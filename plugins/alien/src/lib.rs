//! A plugin that imports an interface no weir host provides (`acme:widgets/gadget`):
//! loading it must name what is missing.

wit_bindgen::generate!({
    path: "wit",
    world: "test:alien/alien",
    generate_all,
});

use exports::weir::task::task::Guest;
use weir::task::types::{CachePolicy, TaskError, TaskInfo};

struct Alien;

impl Guest for Alien {
    fn info() -> Vec<TaskInfo> {
        vec![TaskInfo {
            name: "gadget".into(),
            description: None,
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

    fn run(_task: String, _input: String) -> Result<String, TaskError> {
        // Called, so the import stays in the component.
        Ok(acme::widgets::gadget::spin_up().to_string())
    }

    fn cache_key(_task: String, _input: String) -> Option<String> {
        None
    }
}

export!(Alien);
