//! Property tests: flow files (any text, and generated graphs with references, maps,
//! cycles and typos), references and interpolation, the JSON Schema checks and `-p`
//! values. Each answers with a value or an error; none panics.

use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::Path;

use crate::reference::{self, Reference};
use crate::{Flow, ParameterType, schema};

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |number| number.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "\\$\\{[a-z.0-9]{0,8}\\}?".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{0,6}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A generated flow file: nodes that reference each other (and themselves, and nodes
/// that do not exist), maps, subflows, parameters and the odd unknown field.
fn flow_text() -> impl Strategy<Value = String> {
    let node = (
        0usize..6,
        prop::collection::vec(0usize..8, 0..3),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            "retries = 2",
            "retries = -1",
            "timeout = \"5s\"",
            "timeout = \"forever\"",
            "retry_jitter = 0.5",
            "retry_jitter = 1e300",
            "memory = \"64MiB\"",
            "memory = \"99999999999GiB\"",
            "tags = [\"a\"]",
            "wait_for = [\"n0\"]",
            "allow_failure = [\"n1\"]",
            "retires = 1",
            "flow = \"other.toml\"",
        ])),
    );
    (
        prop::collection::vec(node, 0..7),
        prop::sample::select(vec![
            "",
            "output = \"n0\"",
            "output = { a = \"n1\" }",
            "output = \"zz\"",
        ]),
        any::<bool>(),
    )
        .prop_map(|(nodes, output, with_parameter)| {
            let mut text = format!("format = 1\nname = \"generated\"\n{output}\n");
            if with_parameter {
                text.push_str("[parameters.count]\ntype = \"integer\"\ndefault = 3\n");
            }
            text.push_str("[plugins]\narith = \"arith.wasm\"\n");
            for (index, (task, references, mapped, extra)) in nodes.iter().enumerate() {
                let task = ["add", "multiply", "nope", "add", "add", "x.y"][*task];
                let inputs: Vec<String> = references
                    .iter()
                    .enumerate()
                    .map(|(field, target)| match target {
                        7 => format!("f{field} = \"${{params.count}}\""),
                        6 => format!("f{field} = [1, 2, 3]"),
                        target => format!("f{field} = \"${{n{target}}}\""),
                    })
                    .collect();
                text.push_str(&format!(
                    "[nodes.n{index}]\ntask = \"arith.{task}\"\ninput = {{ {} }}\n",
                    inputs.join(", ")
                ));
                if *mapped && !references.is_empty() {
                    text.push_str("map = [\"f0\"]\n");
                }
                if let Some(extra) = extra {
                    text.push_str(extra);
                    text.push('\n');
                }
            }
            text
        })
}

proptest! {
    #[test]
    fn any_text_is_a_flow_or_an_error(text in "\\PC{0,300}") {
        if let Ok(flow) = Flow::from_toml(&text, Path::new("fuzzed.toml")) {
            let _ = flow.validate();
        }
    }

    #[test]
    fn generated_flows_load_and_validate_or_are_refused_with_an_origin(text in flow_text()) {
        match Flow::from_toml(&text, Path::new("generated.toml")) {
            Ok(flow) => {
                if let Err(error) = flow.validate() {
                    prop_assert!(error.to_string().starts_with("generated.toml"), "{}", error);
                }
            }
            Err(error) => prop_assert!(error.to_string().starts_with("generated.toml"), "{}", error),
        }
    }

    #[test]
    fn references_in_any_template_parse_or_fail_cleanly(template in json_value()) {
        let _ = reference::references_in(&template);
        let lookup = |reference: &Reference| -> Result<Value, reference::ResolveError> {
            reference::follow(reference, &json!({"a": [1, {"b": "c"}], "0": null})).cloned()
        };
        let _ = reference::resolve(&template, &lookup);
    }

    #[test]
    fn any_schema_checks_any_value_without_panicking(schema in json_value(), value in json_value()) {
        let _ = schema::check(&schema, &value);
    }

    #[test]
    fn any_command_line_value_parses_as_any_type_or_errs(text in "\\PC{0,60}") {
        for kind in ParameterType::ALL {
            if let Ok(value) = kind.parse_value(&text) {
                prop_assert!(kind.accepts(&value));
            }
        }
    }

    #[test]
    fn deeply_nested_values_are_refused_not_a_stack_overflow(depth in 100usize..100_000) {
        let text = "[".repeat(depth) + &"]".repeat(depth);
        let _ = ParameterType::Array.parse_value(&text);
        let _ = Flow::from_toml(&format!("format = 1\nname = \"deep\"\nx = {text}\n"), Path::new("deep.toml"));
    }
}
