//! Flow files as users write them, and each validation error's message.

use serde_json::json;
use std::path::Path;

use crate::{Flow, FlowOutput, NodeKind};

const DIAMOND: &str = r#"
format = 1
name = "diamond"
description = "Two branches joined"
output = "join"
retries = 1
retry_delay = "2s"

[parameters.x]
type = "integer"
default = 3

[parameters.label]
type = "string"

[plugins]
arith = "../plugins/arith.wasm"

[nodes.left]
task = "arith.add"
input = { a = "${params.x}", b = 1 }

[nodes.right]
task = "arith.multiply"
input = { a = "${params.x}", b = 2 }
retries = 3
retry_delay = [1, "500ms"]
timeout = "5s"
memory = "64MiB"
cache = "inputs"
tags = ["math"]
http = ["127.0.0.1:8080", "https://*.example.com"]
dirs = ["data:/data:rw"]
env = ["API_TOKEN"]

[nodes.join]
task = "arith.add"
input = { a = "${left}", b = "${right.value}" }
wait_for = ["left"]
allow_failure = ["right"]
"#;

fn parse(text: &str) -> Result<Flow, String> {
    let flow = Flow::from_toml(text, Path::new("flows/diamond.toml"))
        .map_err(|error| error.to_string())?;
    flow.validate().map_err(|error| error.to_string())?;
    Ok(flow)
}

#[test]
fn a_flow_file_loads_with_its_graph_and_overrides() {
    let flow = parse(DIAMOND).unwrap();
    assert_eq!(flow.name, "diamond");
    assert_eq!(flow.retries, 1);
    assert_eq!(
        flow.plugins["arith"],
        Path::new("flows/../plugins/arith.wasm")
    );
    assert_eq!(flow.output, Some(FlowOutput::Node("join".into())));
    assert_eq!(flow.validate().unwrap(), ["left", "right", "join"]);
    assert_eq!(flow.dependencies("join"), ["left", "right"]);
    let NodeKind::Task { overrides, .. } = &flow.node("right").unwrap().kind else {
        panic!("right is a task node");
    };
    assert_eq!(overrides.retries, Some(3));
    assert_eq!(overrides.memory_bytes, Some(64 << 20));
    assert_eq!(overrides.timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(overrides.grants.http.len(), 2);
    assert!(
        overrides
            .grants
            .allows_http("https", "api.example.com", 443)
    );
    assert_eq!(overrides.grants.dirs[0].host, Path::new("flows/data"));
    assert!(overrides.grants.dirs[0].writable);
    assert_eq!(overrides.grants.env, ["API_TOKEN"]);
    let parameters = flow
        .bind_parameters(&json!({"label": "l"}).as_object().unwrap().clone())
        .unwrap();
    assert_eq!(parameters["x"], json!(3));
}

fn error_of(edit: impl Fn(&str) -> String) -> String {
    parse(&edit(DIAMOND)).unwrap_err()
}

#[test]
fn a_typo_names_the_field() {
    let message = error_of(|text| text.replace("retries = 3", "retires = 3"));
    assert!(
        message.starts_with("flows/diamond.toml: node `right`: unknown field `retires`"),
        "{message}"
    );
    let message = error_of(|text| text.replace("description =", "descripton ="));
    assert!(message.contains("unknown field `descripton`"), "{message}");
}

#[test]
fn a_flows_tags_are_read_and_bad_ones_refused() {
    let flow = parse(&DIAMOND.replace(
        "retries = 1\n",
        "retries = 1\ntags = [\"etl\", \"nightly\"]\n",
    ))
    .unwrap();
    assert_eq!(flow.tags, ["etl", "nightly"]);
    assert!(parse(DIAMOND).unwrap().tags.is_empty());
    let message = error_of(|text| text.replace("retries = 1\n", "retries = 1\ntags = [\" \"]\n"));
    assert!(
        message.contains("field `tags`") && message.contains("1 to 256 bytes"),
        "{message}"
    );
}

#[test]
fn an_unsupported_format_is_refused() {
    let message = error_of(|text| text.replace("format = 1", "format = 7"));
    assert_eq!(
        message,
        "flows/diamond.toml, field `format`: format 7 is not supported; this weir reads format 1"
    );
}

#[test]
fn an_unknown_plugin_is_named() {
    let message =
        error_of(|text| text.replace("task = \"arith.multiply\"", "task = \"math.multiply\""));
    assert_eq!(
        message,
        "flows/diamond.toml: node `right`, field `task`: `math.multiply` names no plugin of this flow (plugins: arith)"
    );
}

#[test]
fn a_reference_to_a_missing_node_or_parameter_is_named() {
    let message = error_of(|text| text.replace("${left}", "${lefty}"));
    assert!(
        message.starts_with("flows/diamond.toml: node `join`, field `input`: `${lefty}` names no node of this flow (nodes: join, left, right"),
        "{message}"
    );
    let message = error_of(|text| text.replace("\"${params.x}\", b = 1", "\"${params.y}\", b = 1"));
    assert_eq!(
        message,
        "flows/diamond.toml: node `left`, field `input`: `${params.y}` names no parameter of this flow (parameters: label, x)"
    );
}

#[test]
fn a_cycle_is_refused() {
    let message = error_of(|text| {
        text.replace(
            "input = { a = \"${params.x}\", b = 1 }",
            "input = { a = \"${join}\", b = 1 }",
        )
    });
    assert!(message.contains("the graph has a cycle"), "{message}");
    assert!(
        message.contains("join") && message.contains("left"),
        "{message}"
    );
}

#[test]
fn parameters_are_checked_against_their_types() {
    let flow = parse(DIAMOND).unwrap();
    let given = |value: serde_json::Value| value.as_object().unwrap().clone();
    let wrong = flow
        .bind_parameters(&given(json!({"x": "three", "label": "l"})))
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "flows/diamond.toml, field `parameters.x`: \"three\" is not a integer"
    );
    let missing = flow.bind_parameters(&given(json!({}))).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("the parameter `label` is required")
    );
    let unknown = flow
        .bind_parameters(&given(json!({"label": "l", "z": 1})))
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("the flow has no parameter `z` (parameters: label, x)")
    );
    let bad_default = error_of(|text| text.replace("default = 3", "default = \"3\""));
    assert!(
        bad_default.contains("field `parameters.x.default`: the default \"3\" is not a integer"),
        "{bad_default}"
    );
}

#[test]
fn parameters_can_carry_a_json_schema() {
    let flow = parse(&DIAMOND.replace(
        "[parameters.label]\ntype = \"string\"",
        "[parameters.label]\ntype = \"string\"\nschema = { enum = [\"small\", \"large\"] }",
    ))
    .unwrap();
    let given = |value: serde_json::Value| value.as_object().unwrap().clone();
    assert!(
        flow.bind_parameters(&given(json!({"label": "small"})))
            .is_ok()
    );
    let error = flow
        .bind_parameters(&given(json!({"label": "medium"})))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "flows/diamond.toml, field `parameters.label`: the value: \"medium\" is not one of [\"small\",\"large\"]"
    );
}

#[test]
fn other_mistakes_say_what_to_do() {
    let map_field = error_of(|text| text.replace("allow_failure = [\"right\"]", "map = [\"c\"]"));
    assert!(
        map_field.contains("node `join`, field `map`: `c` is not a field of the input"),
        "{map_field}"
    );
    let not_upstream = error_of(|text| {
        text.replace("allow_failure = [\"right\"]\n", "").replace(
            "wait_for = [\"left\"]",
            "wait_for = [\"left\"]\nallow_failure = [\"left\", \"ghost\"]",
        )
    });
    assert!(
        not_upstream.contains("`ghost` is not an upstream of this node"),
        "{not_upstream}"
    );
    let both = error_of(|text| {
        text.replace(
            "task = \"arith.add\"\ninput = { a = \"${left}\"",
            "flow = \"sub.toml\"\ntask = \"arith.add\"\ninput = { a = \"${left}\"",
        )
    });
    assert!(both.contains("either a `task` or a `flow`"), "{both}");
    let output = error_of(|text| text.replace("output = \"join\"", "output = \"joined\""));
    assert_eq!(
        output,
        "flows/diamond.toml, field `output`: `joined` names no node of this flow"
    );
}

#[test]
fn retry_values_past_their_maxima_are_refused_with_the_field() {
    let message = error_of(|text| text.replace("retries = 3", "retries = 3\nretry_jitter = inf"));
    assert!(
        message.contains("node `right`, field `retry_jitter`: inf is not a number from 0 to 10"),
        "{message}"
    );
    let message = error_of(|text| text.replace("retries = 3", "retries = 3\nretry_jitter = nan"));
    assert!(
        message.contains("NaN is not a number from 0 to 10"),
        "{message}"
    );
    let message = error_of(|text| text.replace("retries = 3", "retries = 4000000000"));
    assert!(
        message.contains("field `retries`: 4000000000 is above the maximum of 1000"),
        "{message}"
    );
}
