//! Who is running the current task and why.

/// The current run as the host sees it; see [`context`].
///
/// It serializes with its Rust field names, so a task may return it as its output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunContext {
    /// The flow run this task run belongs to, if any.
    pub flow_run_id: Option<String>,
    pub flow_run_name: Option<String>,
    pub task_run_id: String,
    /// The run's name (from the task's `run_name` template when it has one).
    pub task_run_name: String,
    /// The task's name as the host knows it (`get-url` for `fn get_url`).
    pub task_name: String,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    pub tags: Vec<String>,
    /// The flow run's parameters (an empty object outside a flow).
    pub parameters: serde_json::Value,
}

/// Asks the host who is running the current task: run ids and names, the attempt number, tags and
/// the flow's parameters.
///
/// ```no_run
/// #[weir::task(retries = 2)]
/// fn flaky() -> weir::Result<String> {
///     let attempt = weir::context().attempt;
///     if attempt < 3 {
///         return Err(weir::TaskError::retriable(format!("attempt {attempt} failed")));
///     }
///     Ok("done".into())
/// }
/// ```
///
/// Outside WebAssembly (in a plugin's native unit tests) there is no host: this returns a stand-in
/// context for a first attempt, with `task_run_id` `"native"` and empty tags and parameters.
pub fn context() -> RunContext {
    #[cfg(target_arch = "wasm32")]
    {
        from_wit(crate::bindings::weir::task::host::context())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        RunContext {
            flow_run_id: None,
            flow_run_name: None,
            task_run_id: "native".into(),
            task_run_name: "native".into(),
            task_name: "native".into(),
            attempt: 1,
            tags: Vec::new(),
            parameters: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn from_wit(context: crate::bindings::weir::task::types::RunContext) -> RunContext {
    let parameters = match serde_json::from_str(&context.parameters) {
        Ok(parameters) => parameters,
        Err(error) => {
            // The host promises a JSON object; say so rather than fail the task over it.
            crate::warn!("the host sent run parameters that are not JSON ({error}); using null");
            serde_json::Value::Null
        }
    };
    RunContext {
        flow_run_id: context.flow_run_id,
        flow_run_name: context.flow_run_name,
        task_run_id: context.task_run_id,
        task_run_name: context.task_run_name,
        task_name: context.task_name,
        attempt: context.attempt,
        tags: context.tags,
        parameters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_parsed_as_json() {
        let context = from_wit(crate::bindings::weir::task::types::RunContext {
            flow_run_id: Some("flow_1".into()),
            flow_run_name: None,
            task_run_id: "run_1".into(),
            task_run_name: "add-1".into(),
            task_name: "add".into(),
            attempt: 2,
            tags: vec!["math".into()],
            parameters: r#"{"n": 3}"#.into(),
        });
        assert_eq!(context.parameters, serde_json::json!({"n": 3}));
        assert_eq!(context.attempt, 2);
    }
}
