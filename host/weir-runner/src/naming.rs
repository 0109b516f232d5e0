//! Task run names: a template filled from the input (`fetch-{url}`), or `task-N`.

use serde_json::Value;

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
