//! Validation of objects against a CRD's structural `openAPIV3Schema`, as kube-apiserver does it:
//! types, enums, required fields, bounds; nulls and unknown fields are pruned (unknown fields are
//! reported so the caller can reject them under `fieldValidation=Strict`). Messages use
//! Kubernetes' wording so kubectl prints what users already know.

use serde_json::{Map, Value};

/// One validation failure, as a `Status.details.causes[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub causes: Vec<Cause>,
    /// Paths of fields the schema does not know; they have been removed from the object.
    pub unknown: Vec<String>,
}

/// Validates and prunes `obj` in place. `apiVersion`, `kind` and `metadata` at the root are
/// always accepted: the API server checks them itself.
pub fn validate(schema: &Value, obj: &mut Value) -> Outcome {
    let mut out = Outcome::default();
    let Some(map) = obj.as_object_mut() else {
        walk(schema, obj, "", &mut out);
        return out;
    };
    let mut root: Map<String, Value> = ["apiVersion", "kind", "metadata"]
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    let mut rest = Value::Object(std::mem::take(map));
    walk(schema, &mut rest, "", &mut out);
    if let Value::Object(rest) = rest {
        root.extend(rest);
    }
    *map = root;
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => type_name(v) == other,
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut Outcome) {
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if int_or_string && !(v.is_string() || type_ok("integer", v)) {
        out.causes.push(Cause {
            reason: "FieldValueInvalid",
            field: path.into(),
            message: format!(
                "Invalid value: {:?}: {path} in body must be of type integer,string: {:?}",
                type_name(v),
                type_name(v)
            ),
        });
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && !int_or_string
        && !type_ok(want, v)
    {
        let got = type_name(v);
        out.causes.push(Cause {
            reason: "FieldValueInvalid",
            field: path.into(),
            message: format!(
                "Invalid value: {got:?}: {path} in body must be of type {want}: {got:?}"
            ),
        });
        return;
    }
    check_enum(schema, v, path, out);
    check_bounds(schema, v, path, out);
    match v {
        Value::Object(map) => walk_object(schema, map, path, out),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn walk_object(schema: &Value, map: &mut Map<String, Value>, path: &str, out: &mut Outcome) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields")
        || additional.and_then(Value::as_bool) == Some(true);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let field = join(path, &key);
        let sub = props
            .and_then(|p| p.get(&key))
            .or(additional.filter(|a| a.is_object()));
        let is_null = map.get(&key).is_some_and(Value::is_null);
        match sub {
            Some(s) if is_null && !flag(s, "nullable") => {
                map.remove(&key);
            }
            Some(s) => {
                if let Some(child) = map.get_mut(&key) {
                    walk(s, child, &field, out);
                }
            }
            None if preserve => {}
            None => {
                map.remove(&key);
                out.unknown.push(field);
            }
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                let field = join(path, name);
                out.causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value".into(),
                    field,
                });
            }
        }
    }
}

fn check_enum(schema: &Value, v: &Value, path: &str, out: &mut Outcome) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if allowed.contains(v) {
        return;
    }
    let list: Vec<String> = allowed.iter().map(shown).collect();
    out.causes.push(Cause {
        reason: "FieldValueNotSupported",
        field: path.into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            shown(v),
            list.join(", ")
        ),
    });
}

fn check_bounds(schema: &Value, v: &Value, path: &str, out: &mut Outcome) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let mut fail = |msg: String| {
        out.causes.push(Cause {
            reason: "FieldValueInvalid",
            field: path.into(),
            message: format!("Invalid value: {}: {msg}", shown(v)),
        })
    };
    if let Some(x) = v.as_f64() {
        if let Some(min) = num("minimum").filter(|m| x < *m) {
            fail(format!(
                "{path} in body should be greater than or equal to {min}"
            ));
        }
        if let Some(max) = num("maximum").filter(|m| x > *m) {
            fail(format!(
                "{path} in body should be less than or equal to {max}"
            ));
        }
    }
    let len = match v {
        Value::String(s) => Some(s.chars().count() as f64),
        Value::Array(a) => Some(a.len() as f64),
        _ => None,
    };
    if let Some(len) = len {
        let (min_k, max_k) = if v.is_string() {
            ("minLength", "maxLength")
        } else {
            ("minItems", "maxItems")
        };
        if let Some(min) = num(min_k).filter(|m| len < *m) {
            fail(format!(
                "{path} in body should be at least {min} chars long"
            ));
        }
        if let Some(max) = num(max_k).filter(|m| len > *m) {
            fail(format!("{path} in body should be at most {max} chars long"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule_endpoint_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["ruleEndpointType"], "properties": {
                "ruleEndpointType": {"type": "string", "enum": ["rest", "eventbus", "servicebus"]},
                "properties": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    }

    #[test]
    fn accepts_a_valid_object_and_keeps_metadata() {
        let mut obj = json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint",
            "metadata": {"name": "x"}, "spec": {"ruleEndpointType": "rest", "properties": {"a": "b"}},
            "status": {"anything": 1}});
        let before = obj.clone();
        let out = validate(&rule_endpoint_schema(), &mut obj);
        assert!(out.causes.is_empty() && out.unknown.is_empty(), "{out:?}");
        assert_eq!(obj, before);
    }

    #[test]
    fn enum_type_and_required_use_kubernetes_wording() {
        let mut obj = json!({"spec": {"ruleEndpointType": "bogus", "properties": {"port": 1}}});
        let out = validate(&rule_endpoint_schema(), &mut obj);
        let msgs: Vec<String> = out
            .causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "spec.ruleEndpointType: Unsupported value: \"bogus\": supported values: \"rest\", \"eventbus\", \"servicebus\"",
                "spec.properties.port: Invalid value: \"integer\": spec.properties.port in body must be of type string: \"integer\"",
            ]
        );
        let mut empty = json!({"spec": {}});
        let out = validate(&rule_endpoint_schema(), &mut empty);
        assert_eq!(out.causes[0].message, "Required value");
        assert_eq!(out.causes[0].field, "spec.ruleEndpointType");
    }

    #[test]
    fn unknown_fields_and_nulls_are_pruned() {
        let mut obj =
            json!({"spec": {"ruleEndpointType": "rest", "extra": 1, "properties": null}, "top": 2});
        let out = validate(&rule_endpoint_schema(), &mut obj);
        assert_eq!(out.unknown, ["spec.extra", "top"]);
        assert_eq!(obj, json!({"spec": {"ruleEndpointType": "rest"}}));
    }

    #[test]
    fn arrays_bounds_and_int_or_string() {
        let schema = json!({"type": "object", "properties": {
            "xs": {"type": "array", "maxItems": 1, "items": {"type": "integer", "minimum": 0}},
            "port": {"x-kubernetes-int-or-string": true}}});
        let mut obj = json!({"xs": [1, -1], "port": "http"});
        let out = validate(&schema, &mut obj);
        let fields: Vec<&str> = out.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["xs", "xs[1]"]);
    }
}
