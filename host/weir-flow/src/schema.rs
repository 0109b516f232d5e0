//! A subset of JSON Schema for flow parameters: `type` (one or a list), `enum`, `const`,
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`,
//! `maxLength`, `items`, `minItems`, `maxItems`, `properties`, `required` and
//! `additionalProperties`. Other keywords are ignored.

use serde_json::Value;

/// Checks `value` against `schema`; the error says where (a JSON pointer) and why.
pub fn check(schema: &Value, value: &Value) -> Result<(), String> {
    check_at(schema, value, "")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, wanted: &str) -> bool {
    let actual = type_name(value);
    actual == wanted || (wanted == "number" && actual == "integer")
}

fn check_at(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        // `true`, `{}` or anything else that is not an object accepts everything.
        return match schema {
            Value::Bool(false) => Err(format!("{}: no value is allowed here", where_(at))),
            _ => Ok(()),
        };
    };
    let fail = |message: String| Err(format!("{}: {message}", where_(at)));
    match schema.get("type") {
        Some(Value::String(wanted)) if !has_type(value, wanted) => {
            return fail(format!("{value} is not of type {wanted}"));
        }
        Some(Value::Array(options))
            if !options
                .iter()
                .filter_map(Value::as_str)
                .any(|wanted| has_type(value, wanted)) =>
        {
            return fail(format!(
                "{value} is not of type {}",
                Value::Array(options.clone())
            ));
        }
        _ => {}
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return fail(format!(
            "{value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return fail(format!("{value} is not {constant}"));
    }
    if let Some(number) = value.as_f64() {
        let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_f64);
        if let Some(minimum) = bound("minimum")
            && number < minimum
        {
            return fail(format!("{value} is less than the minimum {minimum}"));
        }
        if let Some(maximum) = bound("maximum")
            && number > maximum
        {
            return fail(format!("{value} is greater than the maximum {maximum}"));
        }
        if let Some(minimum) = bound("exclusiveMinimum")
            && number <= minimum
        {
            return fail(format!("{value} is not greater than {minimum}"));
        }
        if let Some(maximum) = bound("exclusiveMaximum")
            && number >= maximum
        {
            return fail(format!("{value} is not less than {maximum}"));
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(minimum) = schema.get("minLength").and_then(Value::as_u64)
            && length < minimum
        {
            return fail(format!("the text is shorter than {minimum} characters"));
        }
        if let Some(maximum) = schema.get("maxLength").and_then(Value::as_u64)
            && length > maximum
        {
            return fail(format!("the text is longer than {maximum} characters"));
        }
    }
    if let Some(items) = value.as_array() {
        let count = items.len() as u64;
        if let Some(minimum) = schema.get("minItems").and_then(Value::as_u64)
            && count < minimum
        {
            return fail(format!("the list has fewer than {minimum} items"));
        }
        if let Some(maximum) = schema.get("maxItems").and_then(Value::as_u64)
            && count > maximum
        {
            return fail(format!("the list has more than {maximum} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                check_at(item_schema, item, &format!("{at}/{index}"))?;
            }
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return fail(format!("the field `{name}` is required"));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let path = format!("{at}/{name}");
            match properties.and_then(|properties| properties.get(name)) {
                Some(field_schema) => check_at(field_schema, field, &path)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return fail(format!("the field `{name}` is not allowed"));
                    }
                    Some(extra) => check_at(extra, field, &path)?,
                    None => {}
                },
            }
        }
    }
    Ok(())
}

fn where_(at: &str) -> String {
    if at.is_empty() {
        "the value".to_owned()
    } else {
        format!("at {at}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_the_subset() {
        let schema = json!({
            "type": "object",
            "required": ["owner", "pages"],
            "properties": {
                "owner": {"type": "string", "minLength": 1},
                "pages": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 10}, "maxItems": 3},
                "mode": {"enum": ["fast", "safe"]}
            },
            "additionalProperties": false
        });
        assert!(check(&schema, &json!({"owner": "x", "pages": [1, 2]})).is_ok());
        assert_eq!(
            check(&schema, &json!({"owner": "x", "pages": [1, 20]})).unwrap_err(),
            "at /pages/1: 20 is greater than the maximum 10"
        );
        assert_eq!(
            check(&schema, &json!({"pages": []})).unwrap_err(),
            "the value: the field `owner` is required"
        );
        assert_eq!(
            check(&schema, &json!({"owner": "x", "pages": [], "extra": 1})).unwrap_err(),
            "the value: the field `extra` is not allowed"
        );
        assert_eq!(
            check(&schema, &json!({"owner": "x", "pages": [], "mode": "slow"})).unwrap_err(),
            "at /mode: \"slow\" is not one of [\"fast\",\"safe\"]"
        );
        assert!(check(&json!({"type": "number"}), &json!(3)).is_ok());
        assert!(check(&json!({"type": ["string", "null"]}), &json!(null)).is_ok());
    }
}
