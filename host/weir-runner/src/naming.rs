//! Task run names: a template filled from the input (`fetch-{url}`), or `task-N`.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// Numbers runs per task name: `add-0`, `add-1`… (a runner's, or a flow run's own).
#[derive(Default)]
pub(crate) struct RunNumbers(Mutex<HashMap<String, u64>>);

impl RunNumbers {
    pub(crate) fn next(&self, task: &str) -> String {
        let mut counters = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counter = counters.entry(task.to_owned()).or_insert(0);
        let name = format!("{task}-{counter}");
        *counter += 1;
        name
    }
}

/// Replaces each `{field}` with the input's field (strings without quotes); a field the
/// input lacks is left as written, so the name still shows what was meant.
pub(crate) fn render_run_name(template: &str, input: &Value) -> String {
    let mut name = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        name.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let field = &after[..close];
                match input.get(field) {
                    Some(Value::String(text)) => name.push_str(text),
                    Some(other) => name.push_str(&other.to_string()),
                    None => {
                        name.push('{');
                        name.push_str(field);
                        name.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                name.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    name.push_str(rest);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_fields_from_the_input() {
        let input = json!({"url": "a.example", "page": 3});
        assert_eq!(
            render_run_name("fetch-{url}-{page}", &input),
            "fetch-a.example-3"
        );
        assert_eq!(
            render_run_name("fetch-{missing}", &input),
            "fetch-{missing}"
        );
        assert_eq!(render_run_name("open-{brace", &input), "open-{brace");
    }
}
