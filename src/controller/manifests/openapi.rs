//! The CRD's structural OpenAPI v3 schema, turned into what the API server does with it on a
//! create: prune nulls, apply defaults, then validate (pure, no I/O).
//!
//! The API server does not run a JSON Schema validator, so the schema is converted where the
//! two differ, and the conversion refuses (rather than ignores) an extension it cannot mirror:
//!
//! - `nullable: true` becomes a `"null"` member of `type` (and of `enum`).
//! - Unknown fields: with field validation Strict (kubectl's default since 1.27) a field the
//!   schema does not declare is an error, everywhere, `status` included. Every object schema
//!   without `additionalProperties` or `x-kubernetes-preserve-unknown-fields` is closed.
//! - `status` is dropped on create (the status subresource is on): only its unknown fields
//!   are refused, so its schema keeps the structure and loses the value checks.
//! - `x-kubernetes-int-or-string` is an `anyOf`; `x-kubernetes-list-type: set` is
//!   `uniqueItems`; `map` lists and embedded resources are refused as unsupported.
//! - `metadata` is checked against k8s-openapi's ObjectMeta schema with the API server's name
//!   rules for custom resources (DNS-1123 subdomain name, DNS label namespace, qualified
//!   label and annotation keys).

use serde_json::{Map, Value, json};

/// A DNS-1123 subdomain (metadata.name of a custom resource), without the length limit.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 label (metadata.namespace).
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A qualified name (label and annotation keys): an optional DNS subdomain prefix and a name.
const QUALIFIED_NAME: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";
/// A label value: empty, or alphanumerics with `-_.` inside.
const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// How much of a schema the converted one checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Types, formats, enums, patterns, bounds, required fields, unknown fields.
    Full,
    /// Unknown fields only (what pruning looks at).
    StructureOnly,
}

/// The JSON Schema (draft 2020-12) of a whole document, from the CRD version's
/// `openAPIV3Schema`.
pub fn document_schema(open_api: &Value) -> Result<Value, String> {
    let mut root = open_api.clone();
    let status = root
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.remove("status"));
    let mut out = convert(&root, Mode::Full)?;
    let props = out
        .as_object_mut()
        .and_then(|o| o.get_mut("properties"))
        .and_then(Value::as_object_mut)
        .ok_or("openAPIV3Schema has no properties")?;
    if let Some(status) = status {
        props.insert("status".into(), convert(&status, Mode::StructureOnly)?);
    }
    // The API server adds these three to every custom resource's schema.
    props.insert("apiVersion".into(), json!({"type": "string"}));
    props.insert("kind".into(), json!({"type": "string"}));
    props.insert("metadata".into(), metadata_schema());
    let required = out
        .as_object_mut()
        .expect("converted from an object")
        .entry("required")
        .or_insert_with(|| json!([]));
    if let Value::Array(r) = required {
        r.push(json!("metadata"));
    }
    Ok(out)
}

/// One OpenAPI v3 (Kubernetes structural) schema as JSON Schema.
fn convert(s: &Value, mode: Mode) -> Result<Value, String> {
    let Value::Object(s) = s else {
        return Err(format!("schema {s} is not an object"));
    };
    let mut out = Map::new();
    for (k, v) in s {
        match k.as_str() {
            "properties" => {
                let mut props = Map::new();
                for (name, p) in v.as_object().ok_or("properties is not an object")? {
                    props.insert(name.clone(), convert(p, mode)?);
                }
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), convert(v, mode)?);
            }
            "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), convert(v, mode)?);
            }
            "additionalProperties" => {
                out.insert(k.clone(), v.clone());
            }
            "allOf" | "anyOf" | "oneOf" | "not" if mode == Mode::Full => {
                out.insert(k.clone(), convert_any(v, mode)?);
            }
            _ => convert_keyword(k, v, s, mode, &mut out)?,
        }
    }
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let is_object =
        s.get("type").and_then(Value::as_str) == Some("object") || s.contains_key("properties");
    if is_object && !preserve && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Ok(Value::Object(out))
}

fn convert_any(v: &Value, mode: Mode) -> Result<Value, String> {
    match v {
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| convert(i, mode))
                .collect::<Result<_, _>>()?,
        )),
        other => convert(other, mode),
    }
}

/// A keyword other than the structural ones (`properties`, `items`, ...).
fn convert_keyword(
    k: &str,
    v: &Value,
    s: &Map<String, Value>,
    mode: Mode,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
    let nullable = s.get("nullable") == Some(&Value::Bool(true));
    match k {
        "x-kubernetes-embedded-resource" if v == &Value::Bool(true) => {
            return Err("x-kubernetes-embedded-resource is not supported".into());
        }
        "x-kubernetes-list-type" if mode == Mode::Full => match v.as_str() {
            Some("set") => {
                out.insert("uniqueItems".into(), Value::Bool(true));
            }
            Some("map") => return Err("x-kubernetes-list-type: map is not supported".into()),
            _ => {}
        },
        "x-kubernetes-int-or-string" if mode == Mode::Full && v == &Value::Bool(true) => {
            let mut any = vec![json!({"type": "integer"}), json!({"type": "string"})];
            if nullable {
                any.push(json!({"type": "null"}));
            }
            out.insert("anyOf".into(), Value::Array(any));
        }
        _ if mode == Mode::StructureOnly => {}
        "type" if nullable => {
            out.insert(k.into(), json!([v, "null"]));
        }
        "enum" if nullable => {
            let mut values = v.as_array().cloned().unwrap_or_default();
            values.push(Value::Null);
            out.insert(k.into(), Value::Array(values));
        }
        // OpenAPI 3.0 has boolean exclusive bounds; JSON Schema 2020-12 has numeric ones.
        "exclusiveMinimum" | "exclusiveMaximum" => {
            let bound = if k == "exclusiveMinimum" {
                "minimum"
            } else {
                "maximum"
            };
            if let (Some(true), Some(n)) = (v.as_bool(), s.get(bound)) {
                out.insert(k.into(), n.clone());
            }
        }
        "minimum" | "maximum" => {
            let exclusive = if k == "minimum" {
                "exclusiveMinimum"
            } else {
                "exclusiveMaximum"
            };
            if s.get(exclusive) != Some(&Value::Bool(true)) {
                out.insert(k.into(), v.clone());
            }
        }
        "type" | "enum" | "pattern" | "format" | "minLength" | "maxLength" | "multipleOf"
        | "minItems" | "maxItems" | "uniqueItems" | "minProperties" | "maxProperties"
        | "required" => {
            out.insert(k.into(), v.clone());
        }
        // default, description, title, nullable, example and the other x-kubernetes-*
        // keywords validate nothing by themselves.
        _ => {}
    }
    Ok(())
}

/// k8s-openapi's ObjectMeta schema, closed, with the API server's rules for the names of a
/// custom resource.
fn metadata_schema() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
    });
    let generated = settings
        .into_generator()
        .into_root_schema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
    );
    let mut meta = generated.to_value();
    if let Value::Object(m) = &mut meta {
        m.remove("$schema");
    }
    close_objects(&mut meta);
    let rules = [
        (
            "name",
            json!({"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN}),
        ),
        (
            "namespace",
            json!({"type": "string", "maxLength": 63, "pattern": DNS_LABEL}),
        ),
        (
            "labels",
            json!({"type": "object", "propertyNames": {"pattern": QUALIFIED_NAME},
                   "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}}),
        ),
        (
            "annotations",
            json!({"type": "object", "propertyNames": {"pattern": QUALIFIED_NAME},
                   "additionalProperties": {"type": "string"}}),
        ),
    ];
    if let Some(props) = meta.get_mut("properties").and_then(Value::as_object_mut) {
        for (field, schema) in rules {
            props.insert(field.into(), schema);
        }
    }
    if let Value::Object(m) = &mut meta {
        // kubectl apply refuses a nameless object (no generateName on apply).
        m.insert("required".into(), json!(["name"]));
    }
    meta
}

/// Closes every object schema that lists its properties (Strict field validation).
fn close_objects(s: &mut Value) {
    match s {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            m.values_mut().for_each(close_objects);
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// What the API server does to a decoded object before validating it: a null in a field that
/// is not `nullable` is dropped, then missing fields with a `default` get it (top-down, so
/// defaults inside a default apply too). Metadata is decoded by Go's JSON, where null is absent.
pub fn prune_nulls_and_default(doc: &mut Value, open_api: &Value) {
    if let Some(meta) = doc.get_mut("metadata") {
        drop_nulls(meta);
    }
    walk_defaults(doc, open_api);
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn walk_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            m.retain(|k, x| {
                let child = props.and_then(|p| p.get(k)).or(extra);
                !(x.is_null() && child.is_some_and(|c| !is_nullable(c)))
            });
            for (k, ps) in props.into_iter().flatten() {
                if let (false, Some(d)) = (m.contains_key(k), ps.get("default")) {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, x) in m.iter_mut() {
                if let Some(child) = props.and_then(|p| p.get(k)).or(extra) {
                    walk_defaults(x, child);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                a.iter_mut().for_each(|x| walk_defaults(x, items));
            }
        }
        _ => {}
    }
}

fn is_nullable(s: &Value) -> bool {
    s.get("nullable") == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_types_and_closed_objects() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "string", "nullable": true, "enum": ["x"]},
            "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "c": {"type": "integer", "minimum": 1, "exclusiveMinimum": true},
            "d": {"x-kubernetes-int-or-string": true}
        }});
        let out = convert(&s, Mode::Full).unwrap();
        assert_eq!(out["additionalProperties"], json!(false));
        assert_eq!(out["properties"]["a"]["type"], json!(["string", "null"]));
        assert_eq!(out["properties"]["a"]["enum"], json!(["x", null]));
        assert!(out["properties"]["b"].get("additionalProperties").is_none());
        assert_eq!(
            out["properties"]["c"],
            json!({"type": "integer", "exclusiveMinimum": 1})
        );
        assert_eq!(out["properties"]["d"]["anyOf"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn structure_only_keeps_no_value_checks() {
        let s = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "string", "pattern": "^x$"}}});
        let out = convert(&s, Mode::StructureOnly).unwrap();
        assert_eq!(
            out,
            json!({"properties": {"a": {}}, "additionalProperties": false})
        );
    }

    #[test]
    fn unsupported_extensions_are_refused() {
        for s in [
            json!({"type": "object", "x-kubernetes-embedded-resource": true}),
            json!({"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "string"}}),
        ] {
            assert!(convert(&s, Mode::Full).is_err(), "{s}");
        }
    }

    #[test]
    fn nulls_pruned_unless_nullable_then_defaults() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "boolean", "default": false},
            "b": {"type": "string", "nullable": true, "default": "x"},
            "o": {"type": "object", "default": {}, "properties": {
                "m": {"type": "string", "default": "Enforce"}}}
        }});
        let mut v = json!({"a": null, "b": null, "metadata": {"name": "n", "labels": null}});
        prune_nulls_and_default(&mut v, &s);
        assert_eq!(
            v,
            json!({"a": false, "b": null, "o": {"m": "Enforce"}, "metadata": {"name": "n"}})
        );
    }
}
