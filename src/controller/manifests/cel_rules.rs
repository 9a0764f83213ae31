//! The CRD's `x-kubernetes-validations` (CEL) rules, evaluated as the API server does on a
//! create (pure, no I/O).
//!
//! A rule that names `oldSelf` is a transition rule: the API server runs it on updates only
//! (immutability of applicationName and region), so a create skips it. `optionalOldSelf` and
//! `messageExpression` are refused when the rules are read rather than guessed at.
//! A field set to null counts as absent for `has()`, as it does on the API server.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program, Value as Cel};
use serde_json::Value;

/// Where a rule applies: the path from the document root to the schema node that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Field(String),
    /// Every item of a list.
    Items,
    /// Every value of a map (`additionalProperties`).
    Values,
}

/// One rule that applies on create.
pub struct Rule {
    at: Vec<Step>,
    source: String,
    message: String,
    field_path: Option<String>,
    program: Program,
}

/// A failed rule: the dotted path of the value it applies to and the rule's message.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub path: String,
    pub message: String,
}

/// Reads every rule of a structural schema; transition rules are left out.
pub fn read_rules(schema: &Value) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    collect(schema, &mut Vec::new(), &mut rules)?;
    Ok(rules)
}

fn collect(schema: &Value, at: &mut Vec<Step>, out: &mut Vec<Rule>) -> Result<(), String> {
    for r in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(rule) = read_rule(r, at)? {
            out.push(rule);
        }
    }
    for (name, p) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        at.push(Step::Field(name.clone()));
        collect(p, at, out)?;
        at.pop();
    }
    for (key, step) in [
        ("items", Step::Items),
        ("additionalProperties", Step::Values),
    ] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            at.push(step);
            collect(child, at, out)?;
            at.pop();
        }
    }
    Ok(())
}

fn read_rule(r: &Value, at: &[Step]) -> Result<Option<Rule>, String> {
    let source = r
        .get("rule")
        .and_then(Value::as_str)
        .ok_or("a validation has no rule")?;
    if r.get("optionalOldSelf") == Some(&Value::Bool(true)) || r.get("messageExpression").is_some()
    {
        return Err(format!(
            "rule {source:?}: optionalOldSelf and messageExpression are not supported"
        ));
    }
    let program = Program::compile(source).map_err(|e| format!("rule {source:?}: {e}"))?;
    if program.references().has_variable("oldSelf") {
        return Ok(None);
    }
    let message = match r.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => format!("failed rule: {source}"),
    };
    Ok(Some(Rule {
        at: at.to_vec(),
        source: source.to_string(),
        message,
        field_path: r.get("fieldPath").and_then(Value::as_str).map(String::from),
        program,
    }))
}

/// Evaluates every rule on every value it applies to in `doc` (defaults already applied).
pub fn evaluate(rules: &[Rule], doc: &Value) -> Vec<Failure> {
    let mut failures = Vec::new();
    for rule in rules {
        let mut targets = Vec::new();
        select(doc, &rule.at, String::new(), &mut targets);
        for (path, value) in targets {
            let path = match &rule.field_path {
                Some(f) => format!("{path}{f}"),
                None => path,
            };
            if let Some(message) = run(rule, value) {
                failures.push(Failure { path, message });
            }
        }
    }
    failures
}

/// The values `at` points to, with their dotted paths. An absent (or null) value is skipped.
fn select<'a>(v: &'a Value, at: &[Step], path: String, out: &mut Vec<(String, &'a Value)>) {
    if v.is_null() {
        return;
    }
    let Some((first, rest)) = at.split_first() else {
        out.push((path, v));
        return;
    };
    match (first, v) {
        (Step::Field(f), Value::Object(m)) => {
            if let Some(child) = m.get(f) {
                let p = if path.is_empty() {
                    f.clone()
                } else {
                    format!("{path}.{f}")
                };
                select(child, rest, p, out);
            }
        }
        (Step::Items, Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                select(child, rest, format!("{path}[{i}]"), out);
            }
        }
        (Step::Values, Value::Object(m)) => {
            for (k, child) in m {
                select(child, rest, format!("{path}[{k:?}]"), out);
            }
        }
        _ => {}
    }
}

/// None when the rule holds; otherwise the message to show.
fn run(rule: &Rule, value: &Value) -> Option<String> {
    // The standard library's function table is built once, not per evaluation.
    static STDLIB: OnceLock<Arc<Env>> = OnceLock::new();
    let env = STDLIB.get_or_init(|| Arc::new(Env::stdlib()));
    let mut ctx = Context::with_env(env.clone());
    ctx.add_variable_from_value("self", to_cel(value));
    match rule.program.execute(&ctx) {
        Ok(Cel::Bool(true)) => None,
        Ok(Cel::Bool(false)) => Some(rule.message.clone()),
        Ok(other) => Some(format!(
            "rule {:?} returned {other:?}, not a bool",
            rule.source
        )),
        Err(e) => Some(format!(
            "rule {:?} could not be evaluated: {e}",
            rule.source
        )),
    }
}

/// JSON as CEL sees a Kubernetes object: integers are `int`, a null field is absent.
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(s.clone().into()),
        Value::Array(a) => Cel::List(a.iter().map(to_cel).collect::<Vec<_>>().into()),
        Value::Object(m) => {
            let map: HashMap<String, Cel> = m
                .iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), to_cel(x)))
                .collect();
            map.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.a == 'x' ? has(self.b) : !has(self.b)", "message": "b with a=x only"},
                {"rule": "self.a == oldSelf.a", "message": "immutable"}
            ],
            "properties": {
                "a": {"type": "string"},
                "b": {"type": "string", "nullable": true},
                "l": {"type": "array", "items": {"type": "integer",
                    "x-kubernetes-validations": [{"rule": "self > 0"}]}}
            }
        }}})
    }

    #[test]
    fn transition_rules_are_skipped_on_create() {
        let rules = read_rules(&schema()).unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| !r.source.contains("oldSelf")));
    }

    #[test]
    fn rules_apply_to_every_value_they_name() {
        let rules = read_rules(&schema()).unwrap();
        let ok = json!({"spec": {"a": "x", "b": "y", "l": [1, 2]}});
        assert!(evaluate(&rules, &ok).is_empty());
        let bad = json!({"spec": {"a": "y", "b": "y", "l": [1, 0]}});
        assert_eq!(
            evaluate(&rules, &bad),
            vec![
                Failure {
                    path: "spec".into(),
                    message: "b with a=x only".into()
                },
                Failure {
                    path: "spec.l[1]".into(),
                    message: "failed rule: self > 0".into()
                },
            ]
        );
    }

    #[test]
    fn null_is_absent_for_has() {
        let rules = read_rules(&schema()).unwrap();
        assert!(evaluate(&rules, &json!({"spec": {"a": "y", "b": null}})).is_empty());
        assert_eq!(
            evaluate(&rules, &json!({"spec": {"a": "x", "b": null}})).len(),
            1
        );
    }

    #[test]
    fn unsupported_rule_options_are_refused() {
        let s = json!({"x-kubernetes-validations": [{"rule": "true", "messageExpression": "'m'"}]});
        assert!(read_rules(&s).is_err());
        let s = json!({"x-kubernetes-validations": [{"rule": "self ==="}]});
        assert!(read_rules(&s).is_err());
    }
}
