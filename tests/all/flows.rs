//! Flows: graphs, maps, subflows, references, failures, retries, validation.

use serde_json::{Map, Value, json};
use weir_core::State;
use weir_flow::Flow;
use weir_store::{FlowRunFilter, TaskRunFilter};
use weir_tests::Harness;

fn no_parameters() -> Map<String, Value> {
    Map::new()
}

fn parameters(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

const DIAMOND: &str = r#"
format = 1
name = "diamond"
output = "join"

[parameters.x]
type = "integer"
default = 3

[plugins]
arith = "{arith}"

[nodes.left]
task = "arith.add"
input = { a = "${params.x}", b = 1 }

[nodes.right]
task = "arith.add"
input = { a = "${params.x}", b = 10 }

[nodes.join]
task = "arith.add"
input = { a = "${left}", b = "${right}" }
"#;

#[tokio::test]
async fn a_diamond_runs_and_is_recorded_as_a_graph() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow("diamond.toml", DIAMOND)).unwrap();
    let outcome = harness
        .flows(8)
        .run_flow(&flow, &parameters(json!({"x": 5})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(outcome.output, Some(json!(21)));
    assert!(
        outcome.name.contains('-'),
        "flow runs get adjective-animal names: {}",
        outcome.name
    );

    let record = harness.store.flow_run(&outcome.id).await.unwrap().unwrap();
    assert_eq!(record.state, State::Completed);
    assert_eq!(record.parameters, json!({"x": 5}));
    assert_eq!(
        harness
            .store
            .result(record.result_digest.as_deref().unwrap())
            .await
            .unwrap(),
        json!(21)
    );
    let task_runs = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(outcome.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut nodes: Vec<(String, String)> = task_runs
        .iter()
        .map(|run| (run.node.clone().unwrap(), run.name.clone()))
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        [
            ("join".into(), "add-2".into()),
            ("left".into(), "add-0".into()),
            ("right".into(), "add-1".into())
        ]
    );
    // The join started after both branches ended.
    let by_node = |node: &str| {
        task_runs
            .iter()
            .find(|run| run.node.as_deref() == Some(node))
            .unwrap()
    };
    assert!(by_node("join").started.unwrap() >= by_node("left").ended.unwrap());
    assert!(by_node("join").started.unwrap() >= by_node("right").ended.unwrap());
}

#[tokio::test]
async fn a_map_of_a_thousand_elements_keeps_its_order() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "map.toml",
        r#"
format = 1
name = "map"
output = "shifted"

[parameters.values]
type = "array"

[plugins]
arith = "{arith}"

[nodes.shifted]
task = "arith.add"
input = { a = "${params.values}", b = 1000 }
map = ["a"]
"#,
    ))
    .unwrap();
    let values: Vec<i64> = (0..1000).collect();
    let outcome = harness
        .flows(32)
        .run_flow(&flow, &parameters(json!({"values": values})))
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    let expected: Vec<i64> = (1000..2000).collect();
    assert_eq!(outcome.output, Some(json!(expected)));
    let runs = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(outcome.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1000);
    let run_999 = runs.iter().find(|run| run.name == "add-999").unwrap();
    assert_eq!(run_999.input, json!({"a": 999, "b": 1000}));
}

#[tokio::test]
async fn zipped_maps_and_references_into_fields() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "fields.toml",
        r#"
format = 1
name = "fields"
output = { products = "products", first = "first", who = "who", text = "text" }

[plugins]
arith = "{arith}"

[nodes.data]
task = "arith.echo"
input = { value = { xs = [1, 2, 3], ys = [4, 5, 6], name = "ada" } }

[nodes.products]
task = "arith.multiply"
input = { a = "${data.xs}", b = "${data.ys}" }
map = ["a", "b"]

[nodes.first]
task = "arith.multiply"
input = { a = "${data.xs.0}", b = "${products.2}" }

[nodes.who]
task = "arith.whoami"
wait_for = ["first"]

[nodes.text]
task = "arith.echo"
input = { value = "${data.name} ran as ${who.task_name}" }
"#,
    ))
    .unwrap();
    let outcome = harness
        .flows(8)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    let output = outcome.output.unwrap();
    assert_eq!(output["products"], json!([4.0, 10.0, 18.0]));
    assert_eq!(output["first"], json!(18.0));
    assert_eq!(output["who"]["flow_run_name"], json!(outcome.name));
    assert_eq!(output["text"], json!("ada ran as whoami"));
}

#[tokio::test]
async fn a_subflow_runs_with_parameters_and_returns_its_output() {
    let harness = Harness::new();
    harness.write_flow(
        "double.toml",
        r#"
format = 1
name = "double"
output = "doubled"

[parameters.n]
type = "number"

[plugins]
arith = "{arith}"

[nodes.doubled]
task = "arith.multiply"
input = { a = "${params.n}", b = 2 }
"#,
    );
    let parent = Flow::load(&harness.write_flow(
        "parent.toml",
        r#"
format = 1
name = "parent"
output = "plus_one"

[plugins]
arith = "{arith}"

[nodes.twice]
flow = "double.toml"
parameters = { n = 20 }

[nodes.plus_one]
task = "arith.multiply"
input = { a = "${twice}", b = 1.5 }
"#,
    ))
    .unwrap();
    let outcome = harness
        .flows(8)
        .run_flow(&parent, &no_parameters())
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(outcome.output, Some(json!(60.0)));
    let runs = harness
        .store
        .flow_runs(&FlowRunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    let child = runs.iter().find(|run| run.flow == "double").unwrap();
    assert_eq!(child.parent_flow_run_id.as_ref(), Some(&outcome.id));
    assert_eq!(child.parent_node.as_deref(), Some("twice"));
    assert_eq!(child.parameters, json!({"n": 20}));
}

const FAILING: &str = r#"
format = 1
name = "failing"
retries = 1
output = "after"

[plugins]
arith = "{arith}"

[nodes.ok]
task = "arith.add"
input = { a = 1, b = 1 }

[nodes.broken]
task = "arith.divide"
input = { a = "${ok}", b = 0 }

[nodes.after]
task = "arith.add"
input = { a = "${broken}", b = 1 }

[nodes.last]
task = "arith.add"
input = { a = "${after}", b = 1 }
"#;

#[tokio::test]
async fn a_failure_makes_descendants_not_ready_and_retries_keep_completed_nodes() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow("failing.toml", FAILING)).unwrap();
    let outcome = harness
        .flows(8)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Failed);
    assert_eq!(outcome.attempts, 2);
    let message = outcome.message.unwrap();
    assert!(
        message.starts_with("node `broken` did not complete: task run 'divide-"),
        "{message}"
    );
    assert!(message.contains("fatal"), "{message}");

    let runs = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(outcome.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let count = |node: &str, state: State| {
        runs.iter()
            .filter(|run| run.node.as_deref() == Some(node) && run.state == state)
            .count()
    };
    // `ok` completed on the first flow attempt and was not run again on the second.
    assert_eq!(count("ok", State::Completed), 1);
    assert_eq!(count("broken", State::Failed), 2);
    assert_eq!(count("after", State::NotReady), 2);
    assert_eq!(count("last", State::NotReady), 2);
    let not_ready = runs
        .iter()
        .find(|run| run.node.as_deref() == Some("after"))
        .unwrap();
    assert_eq!(
        not_ready.state_message.as_deref(),
        Some("upstream node `broken` did not complete")
    );
    let history: Vec<State> = harness
        .store
        .flow_run_history(&outcome.id)
        .await
        .unwrap()
        .iter()
        .map(|change| change.state)
        .collect();
    assert_eq!(
        history,
        [
            State::Pending,
            State::Running,
            State::AwaitingRetry,
            State::Running,
            State::Failed
        ]
    );
}

#[tokio::test]
async fn allow_failure_lets_a_node_run_after_a_failed_upstream() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "tolerant.toml",
        &FAILING
            .replace("retries = 1\n", "")
            .replace("input = { a = \"${broken}\", b = 1 }", "task_input_placeholder")
            .replace(
                "task_input_placeholder",
                "input = { value = { broken = \"${broken}\", note = \"went on\" } }\nallow_failure = [\"broken\"]",
            )
            .replace("[nodes.after]\ntask = \"arith.add\"", "[nodes.after]\ntask = \"arith.echo\"")
            .replace("input = { a = \"${after}\", b = 1 }", "input = { value = \"${after.note}\" }")
            .replace("[nodes.last]\ntask = \"arith.add\"", "[nodes.last]\ntask = \"arith.echo\""),
    ))
    .unwrap();
    let outcome = harness
        .flows(8)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap();
    // The failure was handled, so the flow completes with the tolerant branch's output.
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(
        outcome.output,
        Some(json!({"broken": null, "note": "went on"}))
    );
}

#[tokio::test]
async fn a_flow_with_an_unknown_task_does_not_start() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "typo.toml",
        &DIAMOND.replace(
            "task = \"arith.add\"\ninput = { a = \"${left}\"",
            "task = \"arith.ad\"\ninput = { a = \"${left}\"",
        ),
    ))
    .unwrap();
    let error = harness
        .flows(8)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.ends_with("typo.toml: node `join`, field `task`: plugin `arith` has no task `ad` (its tasks: add, multiply, divide, whoami, cached-add, keyed, slow-add, burn, echo, big, sum)"), "{message}");
    assert!(
        harness
            .store
            .flow_runs(&FlowRunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    let error = harness
        .flows(8)
        .run_flow(
            &Flow::load(&harness.write_flow("diamond.toml", DIAMOND)).unwrap(),
            &parameters(json!({"x": "five"})),
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("diamond.toml, field `parameters.x`: \"five\" is not a integer"),
        "{error}"
    );
}

#[tokio::test]
async fn a_flow_that_runs_itself_is_refused() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "loop.toml",
        r#"
format = 1
name = "loop"

[nodes.again]
flow = "loop.toml"
"#,
    ))
    .unwrap();
    let error = harness
        .flows(2)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("runs itself as a subflow"),
        "{error}"
    );
}

#[tokio::test]
async fn a_flow_timeout_stops_the_run_and_cancels_its_task_runs() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "slow.toml",
        r#"
format = 1
name = "slow"
timeout = "300ms"

[plugins]
misbehave = "{misbehave}"

[nodes.forever]
task = "misbehave.spin"
"#,
    ))
    .unwrap();
    let started = std::time::Instant::now();
    let outcome = harness
        .flows(2)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap();
    assert_eq!(outcome.state, State::TimedOut, "{outcome:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let runs = harness
        .store
        .task_runs(&TaskRunFilter {
            flow_run_id: Some(outcome.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, State::Cancelled);
}

/// A chain of n nodes: each waits for the one before. Validating and scheduling it must stay
/// linear: both used to scan every node at every step, which a chain of 1,000 paid for with
/// ~100 µs per node and a chain of 20,000 with minutes.
fn chain(count: usize) -> Flow {
    let mut flow = Flow::new("chain").plugin("arith", weir_tests::plugin_path("arith"));
    for i in 0..count {
        flow = flow.task(format!("t{i}"), "arith.add", json!({"a": i, "b": 1}));
        if i > 0 {
            flow = flow.with_last(|node| node.wait_for.push(format!("t{}", i - 1)));
        }
    }
    flow
}

#[test]
fn a_long_chain_validates_in_linear_time() {
    let flow = chain(20_000);
    let started = std::time::Instant::now();
    let order = flow.validate().unwrap();
    assert_eq!(order.len(), 20_000);
    assert_eq!(order[19_999], "t19999");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "validating a chain of 20,000 nodes took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_chain_of_nodes_runs_each_after_the_one_before() {
    let harness = Harness::new();
    let outcome = harness
        .flows(8)
        .run_flow(&chain(300).output("t299"), &no_parameters())
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Completed, "{outcome:?}");
    assert_eq!(outcome.output, Some(json!(300)));
    let runs = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    assert_eq!(runs.len(), 300);
}

#[tokio::test]
async fn a_map_of_stuck_tasks_leaves_a_quarter_of_the_permits_to_other_nodes() {
    let harness = Harness::new();
    let flow = Flow::load(&harness.write_flow(
        "stuck.toml",
        r#"
format = 1
name = "stuck"

[plugins]
misbehave = "{misbehave}"
arith = "{arith}"

[nodes.spin]
task = "misbehave.sleepy"
input = { ms = [60000, 60000, 60000, 60000, 60000, 60000] }
map = ["ms"]
timeout = "1s"

[nodes.quick]
task = "arith.add"
input = { a = 1, b = 2 }
"#,
    ))
    .unwrap();
    let outcome = harness
        .flows(4)
        .run_flow(&flow, &no_parameters())
        .await
        .unwrap();
    assert_eq!(outcome.state, State::Failed);
    let runs = harness
        .store
        .task_runs(&TaskRunFilter::default())
        .await
        .unwrap();
    let quick = runs
        .iter()
        .find(|run| run.node.as_deref() == Some("quick"))
        .unwrap();
    assert_eq!(quick.state, State::Completed);
    // The quick node did not wait for a spinner to time out: it ended before any did.
    let first_spinner_end = runs
        .iter()
        .filter(|run| run.node.as_deref() == Some("spin"))
        .filter_map(|run| run.ended)
        .min()
        .unwrap();
    assert!(quick.ended.unwrap() < first_spinner_end);
    // Three of the four permits at most went to the map at once.
    let mut spans: Vec<_> = runs
        .iter()
        .filter(|run| run.node.as_deref() == Some("spin"))
        .map(|run| (run.started.unwrap(), run.ended.unwrap()))
        .collect();
    spans.sort();
    let most_at_once = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(most_at_once <= 3, "{most_at_once} spinners at once");
    assert!(
        runs.iter()
            .filter(|run| run.node.as_deref() == Some("spin"))
            .all(|run| run.state == State::TimedOut)
    );
}
