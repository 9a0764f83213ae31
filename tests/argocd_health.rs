//! `deploy/argocd/health.lua` run the way Argo CD runs a resource health check: the object as
//! the global `obj`, the script's return value `{status, message}`. Argo CD's interpreter is
//! gopher-lua (Lua 5.1); the script keeps to what 5.1 and 5.4 share, and this test runs it on
//! Lua 5.4 (mlua, vendored).

use mlua::{Lua, Table, Value as LuaValue};
use serde_json::{Value, json};

const SCRIPT: &str = include_str!("../deploy/argocd/health.lua");

fn to_lua(lua: &Lua, v: &Value) -> LuaValue {
    match v {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map(LuaValue::Integer)
            .unwrap_or_else(|| LuaValue::Number(n.as_f64().unwrap_or_default())),
        Value::String(s) => LuaValue::String(lua.create_string(s).unwrap()),
        Value::Array(items) => {
            let t = lua.create_table().unwrap();
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)).unwrap();
            }
            LuaValue::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table().unwrap();
            for (k, item) in map {
                t.raw_set(k.as_str(), to_lua(lua, item)).unwrap();
            }
            LuaValue::Table(t)
        }
    }
}

/// (status, message) as Argo CD would show them.
fn health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals().set("obj", to_lua(&lua, obj)).unwrap();
    let hs: Table = lua
        .load(SCRIPT)
        .set_name("health.lua")
        .eval()
        .expect("the script returns a table");
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn cond(kind: &str, status: &str, reason: &str, generation: i64) -> Value {
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": format!("{kind} is {status} because {reason}"),
        "observedGeneration": generation,
        "lastTransitionTime": "2026-11-26T12:00:00Z",
    })
}

fn resource(generation: i64, conditions: Vec<Value>) -> Value {
    json!({
        "apiVersion": "msfcmk.dev/v1alpha1",
        "kind": "ApplicationEncryption",
        "metadata": {"name": "orders", "namespace": "team-a", "generation": generation},
        "spec": {"applicationName": "orders", "keyType": "AwsOwnedKey"},
        "status": {"observedGeneration": generation, "conditions": conditions},
    })
}

fn status_of(obj: &Value) -> String {
    health(obj).0
}

#[test]
fn no_status_yet_is_progressing() {
    let mut obj = resource(1, vec![]);
    obj.as_object_mut().unwrap().remove("status");
    let (status, message) = health(&obj);
    assert_eq!(status, "Progressing");
    assert!(!message.is_empty());
    assert_eq!(
        status_of(&json!({"metadata": {}, "status": {}})),
        "Progressing"
    );
    assert_eq!(status_of(&resource(1, vec![])), "Progressing");
}

#[test]
fn ready_and_current_is_healthy() {
    let obj = resource(
        3,
        vec![
            cond("Ready", "True", "Converged", 3),
            cond("Reconciling", "False", "Converged", 3),
            cond("Stalled", "False", "Converged", 3),
        ],
    );
    let (status, message) = health(&obj);
    assert_eq!(status, "Healthy");
    assert!(message.starts_with("Converged"), "{message}");
    // Without the kstatus conditions (older controllers): Ready alone decides.
    assert_eq!(
        status_of(&resource(1, vec![cond("Ready", "True", "Converged", 1)])),
        "Healthy"
    );
}

#[test]
fn ready_for_an_older_generation_is_progressing() {
    let obj = resource(4, vec![cond("Ready", "True", "Converged", 3)]);
    let (status, message) = health(&obj);
    assert_eq!(status, "Progressing");
    assert!(message.contains("generation 4"), "{message}");
}

#[test]
fn stalled_is_degraded() {
    let obj = resource(
        2,
        vec![
            cond("Ready", "False", "KeyPolicyUpdateFailed", 2),
            cond("Stalled", "True", "KeyPolicyUpdateFailed", 2),
            cond("Reconciling", "False", "KeyPolicyUpdateFailed", 2),
        ],
    );
    let (status, message) = health(&obj);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("KeyPolicyUpdateFailed: "), "{message}");
}

#[test]
fn terminal_reasons_are_degraded_without_stalled() {
    for reason in [
        "NotPermitted",
        "Conflict",
        "UpdateRolledBack",
        "KeyPolicyNotMergeable",
        "KeyDisabled",
        "ApplicationNotFound",
        "WouldRestartWithoutState",
    ] {
        let obj = resource(1, vec![cond("Ready", "False", reason, 1)]);
        assert_eq!(status_of(&obj), "Degraded", "{reason}");
    }
}

#[test]
fn work_in_flight_is_progressing() {
    let reconciling = resource(
        2,
        vec![
            cond("Ready", "False", "Updating", 2),
            cond("Reconciling", "True", "Updating", 2),
            cond("Stalled", "False", "Updating", 2),
        ],
    );
    let (status, message) = health(&reconciling);
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("Updating"), "{message}");
    // Ready True but a change still in flight (kstatus: Reconciling wins).
    let still = resource(
        2,
        vec![
            cond("Ready", "True", "Converged", 2),
            cond("Reconciling", "True", "Reconciling", 2),
        ],
    );
    assert_eq!(status_of(&still), "Progressing");
    // Ready not True for a reason that is not terminal, no Stalled: retried, so Progressing.
    for reason in [
        "WaitingForApplicationStatus",
        "AwsUnavailable",
        "Reconciling",
    ] {
        let obj = resource(1, vec![cond("Ready", "False", reason, 1)]);
        assert_eq!(status_of(&obj), "Progressing", "{reason}");
    }
    let unknown = resource(1, vec![cond("Ready", "Unknown", "Reconciling", 1)]);
    assert_eq!(status_of(&unknown), "Progressing");
}

#[test]
fn being_deleted_is_progressing() {
    let mut obj = resource(1, vec![cond("Ready", "True", "Converged", 1)]);
    obj["metadata"]["deletionTimestamp"] = json!("2026-11-26T12:30:00Z");
    let (status, message) = health(&obj);
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("Deleting"), "{message}");
}

#[test]
fn suspended_is_suspended() {
    let obj = resource(1, vec![cond("Ready", "False", "Suspended", 1)]);
    assert_eq!(status_of(&obj), "Suspended");
}

/// Every terminal reason the script lists is one the code emits (a string literal under
/// `src/`): a renamed reason cannot silently turn Degraded into Progressing.
#[test]
fn terminal_reasons_exist_in_the_code() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut code = String::new();
    collect_sources(&std::path::Path::new(root).join("src"), &mut code);
    let table = &SCRIPT[SCRIPT.find("local TERMINAL").unwrap()..];
    let table = &table[..table.find("\n}").unwrap()];
    let reasons: Vec<&str> = table
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .filter(|w| *w != "TERMINAL")
        .collect();
    assert!(reasons.len() > 10, "{reasons:?}");
    let missing: Vec<_> = reasons
        .iter()
        .filter(|r| !code.contains(&format!("\"{r}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "health.lua treats reasons as terminal that no code under src/ emits: {missing:?}"
    );
}

fn collect_sources(dir: &std::path::Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("source"));
        }
    }
}
