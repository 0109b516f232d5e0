//! References inside a node's input: `${params.name}`, `${node}`, `${node.field.0}`.
//!
//! A string that is exactly one reference is replaced by the referenced JSON value, type
//! and all; a reference inside a longer string is interpolated as text (strings without
//! quotes, other values as JSON). `$${` writes a literal `${`.

use serde_json::Value;
use std::fmt;

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Parameter(String),
    Node(String),
}

/// One step into a JSON value: an object field or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Field(String),
    Index(usize),
}

/// A parsed `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub target: Target,
    pub path: Vec<PathStep>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Parameter(name) => write!(f, "${{params.{name}")?,
            Target::Node(node) => write!(f, "${{{node}")?,
        }
        for step in &self.path {
            match step {
                PathStep::Field(field) => write!(f, ".{field}")?,
                PathStep::Index(index) => write!(f, ".{index}")?,
            }
        }
        f.write_str("}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("`${{` without a closing `}}` in {0:?}")]
    Unclosed(String),
    #[error("empty reference `${{}}` in {0:?}")]
    Empty(String),
    #[error("`${{params}}` needs a parameter name, as in `${{params.count}}`")]
    BareParams,
}

/// Pieces of a string: literal text and references.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Reference(Reference),
}

fn parse_expression(expression: &str) -> Result<Reference, ReferenceError> {
    let mut parts = expression.split('.').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let steps = |parts: &[&str]| -> Vec<PathStep> {
        parts
            .iter()
            .map(|part| match part.parse::<usize>() {
                Ok(index) => PathStep::Index(index),
                Err(_) => PathStep::Field((*part).to_owned()),
            })
            .collect()
    };
    if head == "params" {
        let (name, path) = rest.split_first().ok_or(ReferenceError::BareParams)?;
        return Ok(Reference {
            target: Target::Parameter((*name).to_owned()),
            path: steps(path),
        });
    }
    Ok(Reference {
        target: Target::Node(head.to_owned()),
        path: steps(&rest),
    })
}

fn parse_pieces(text: &str) -> Result<Vec<Piece>, ReferenceError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(position) = rest.find("${") {
        // `$${` is an escaped `${`.
        if position > 0 && rest[..position].ends_with('$') {
            literal.push_str(&rest[..position - 1]);
            literal.push_str("${");
            rest = &rest[position + 2..];
            continue;
        }
        literal.push_str(&rest[..position]);
        let after = &rest[position + 2..];
        let close = after
            .find('}')
            .ok_or_else(|| ReferenceError::Unclosed(text.to_owned()))?;
        let expression = after[..close].trim();
        if expression.is_empty() {
            return Err(ReferenceError::Empty(text.to_owned()));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Reference(parse_expression(expression)?));
        rest = &after[close + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// Every reference in a JSON template, in document order.
pub fn references_in(template: &Value) -> Result<Vec<Reference>, ReferenceError> {
    let mut found = Vec::new();
    collect(template, &mut found)?;
    Ok(found)
}

fn collect(template: &Value, found: &mut Vec<Reference>) -> Result<(), ReferenceError> {
    match template {
        Value::String(text) => {
            for piece in parse_pieces(text)? {
                if let Piece::Reference(reference) = piece {
                    found.push(reference);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, found)?;
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                collect(item, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a reference could not be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference}: {reason}")]
pub struct ResolveError {
    pub reference: String,
    pub reason: String,
}

/// Follows `path` into `value`.
pub fn follow<'a>(reference: &Reference, value: &'a Value) -> Result<&'a Value, ResolveError> {
    let mut current = value;
    for step in &reference.path {
        let next = match (step, current) {
            (PathStep::Field(field), Value::Object(map)) => map.get(field),
            (PathStep::Index(index), Value::Array(items)) => items.get(*index),
            (PathStep::Index(index), Value::Object(map)) => map.get(&index.to_string()),
            _ => None,
        };
        current = next.ok_or_else(|| ResolveError {
            reference: reference.to_string(),
            reason: match step {
                PathStep::Field(field) => format!("the value has no field `{field}`"),
                PathStep::Index(index) => format!("the value has no element {index}"),
            },
        })?;
    }
    Ok(current)
}

/// Replaces every reference in `template`, looking values up with `lookup`.
pub fn resolve(
    template: &Value,
    lookup: &dyn Fn(&Reference) -> Result<Value, ResolveError>,
) -> Result<Value, ResolveError> {
    Ok(match template {
        Value::String(text) => {
            let pieces = parse_pieces(text).map_err(|error| ResolveError {
                reference: text.clone(),
                reason: error.to_string(),
            })?;
            match pieces.as_slice() {
                [Piece::Reference(reference)] => lookup(reference)?,
                _ => {
                    let mut joined = String::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(text) => joined.push_str(&text),
                            Piece::Reference(reference) => match lookup(&reference)? {
                                Value::String(text) => joined.push_str(&text),
                                other => joined.push_str(&other.to_string()),
                            },
                        }
                    }
                    Value::String(joined)
                }
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve(item, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| Ok((key.clone(), resolve(item, lookup)?)))
                .collect::<Result<_, ResolveError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(reference: &Reference) -> Result<Value, ResolveError> {
        let values = json!({"count": 3, "user": {"name": "ada", "langs": ["rust", "ml"]}});
        let root = match &reference.target {
            Target::Parameter(name) => values.get(name).cloned().unwrap_or(Value::Null),
            Target::Node(node) => json!({"node": node}),
        };
        follow(reference, &root).cloned()
    }

    #[test]
    fn a_whole_string_reference_keeps_its_type() {
        let resolved = resolve(
            &json!({"n": "${params.count}", "l": "${params.user.langs}"}),
            &lookup,
        )
        .unwrap();
        assert_eq!(resolved, json!({"n": 3, "l": ["rust", "ml"]}));
    }

    #[test]
    fn references_inside_text_are_interpolated() {
        let resolved = resolve(
            &json!("hi ${params.user.name}, ${params.count} langs, first ${params.user.langs.0}"),
            &lookup,
        )
        .unwrap();
        assert_eq!(resolved, json!("hi ada, 3 langs, first rust"));
        assert_eq!(
            resolve(&json!("cost: $${price}"), &lookup).unwrap(),
            json!("cost: ${price}")
        );
    }

    #[test]
    fn references_are_found_and_errors_named() {
        let found = references_in(&json!({"a": ["${x.y}", "z ${params.p}"]})).unwrap();
        assert_eq!(found[0].target, Target::Node("x".into()));
        assert_eq!(found[0].path, vec![PathStep::Field("y".into())]);
        assert_eq!(found[1].target, Target::Parameter("p".into()));
        assert!(references_in(&json!("${oops")).is_err());
        assert_eq!(
            references_in(&json!("${params}")).unwrap_err(),
            ReferenceError::BareParams
        );
        let error = resolve(&json!("${params.user.age}"), &lookup).unwrap_err();
        assert_eq!(
            error.to_string(),
            "${params.user.age}: the value has no field `age`"
        );
    }
}
