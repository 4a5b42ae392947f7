//! The annotations that carry what one version cannot hold (see the module above).

use serde_json::{Map, Value, json};

/// The stash annotation `key` of `obj`, parsed (empty when absent or unreadable).
pub fn read(obj: &Value, key: &str) -> Map<String, Value> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

/// Removes annotation `key`, dropping an annotation map left empty.
pub fn remove(obj: &mut Value, key: &str) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove(key);
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
}

/// Sets annotation `key` to `stash` as JSON; `always` writes it even when empty (a mark).
pub fn write(obj: &mut Value, key: &str, stash: Map<String, Value>, always: bool) {
    if stash.is_empty() && !always {
        return;
    }
    let text = Value::Object(stash).to_string();
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"][key] = Value::String(text);
}

/// A stashed original (`from`) and what it converted to (`to`).
pub fn entry(from: &Value, to: &Value) -> Value {
    json!({"from": from, "to": to})
}

/// The stashed original of `field`, if what it converted to is still `now`.
pub fn original<'a>(stash: &'a Map<String, Value>, field: &str, now: &Value) -> Option<&'a Value> {
    let e = stash.get(field)?;
    (e.get("to").unwrap_or(&Value::Null) == now).then(|| e.get("from"))?
}
