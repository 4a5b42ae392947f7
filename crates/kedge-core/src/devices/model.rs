//! DeviceModel: v1alpha2 ↔ v1beta1.

use serde_json::{Map, Value, json};

use super::stash::{self, entry, original};
use super::{STASH_V1ALPHA2, STASH_V1BETA1};

/// v1alpha2 types that have a unit.
const WITH_UNIT: [&str; 3] = ["int", "float", "double"];

fn props_of(obj: &Value) -> Value {
    obj.pointer("/spec/properties")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()))
}

fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k) {
            to.insert(k.to_string(), v.clone());
        }
    }
}

/// `{int: {accessMode, minimum: 0, …}}` → `type: INT, accessMode, minimum: "0", …`.
fn property_up(p: &Value) -> Value {
    let mut out = Map::new();
    copy(p, &mut out, &["name", "description"]);
    if let Some((t, settings)) = p
        .get("type")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
    {
        out.insert("type".into(), json!(t.to_uppercase()));
        copy(settings, &mut out, &["accessMode", "unit"]);
        for k in ["minimum", "maximum"] {
            if let Some(v) = settings.get(k).filter(|v| v.is_number()) {
                out.insert(k.into(), json!(v.to_string()));
            }
        }
    }
    Value::Object(out)
}

/// `type: INT, minimum: "0"` → `{int: {accessMode, minimum: 0}}` (non-numeric bounds are lost).
fn property_down(p: &Value) -> Value {
    let mut out = Map::new();
    copy(p, &mut out, &["name", "description"]);
    let t = match p.get("type").and_then(Value::as_str).unwrap_or("STRING") {
        "STREAM" => "bytes".to_string(),
        t => t.to_lowercase(),
    };
    let mut settings = Map::new();
    let mode = p
        .get("accessMode")
        .cloned()
        .unwrap_or_else(|| json!("ReadWrite"));
    settings.insert("accessMode".into(), mode);
    if WITH_UNIT.contains(&t.as_str()) {
        copy(p, &mut settings, &["unit"]);
        for k in ["minimum", "maximum"] {
            let text = p.get(k).and_then(Value::as_str).unwrap_or("");
            let n = match t.as_str() {
                "int" => text.parse::<i64>().ok().map(Value::from),
                _ => text.parse::<f64>().ok().map(Value::from),
            };
            if let Some(n) = n {
                settings.insert(k.into(), n);
            }
        }
    }
    out.insert("type".into(), json!({t: settings}));
    Value::Object(out)
}

fn map_props(props: &Value, f: fn(&Value) -> Value) -> Value {
    Value::Array(props.as_array().into_iter().flatten().map(f).collect())
}

/// Converts `obj`'s properties with `f`, stashing the originals when `back` does not restore
/// them, and taking the other version's stashed properties while they still apply.
fn convert(
    obj: &Value,
    read_key: &str,
    f: fn(&Value) -> Value,
    back: fn(&Value) -> Value,
) -> (Value, Map<String, Value>, Map<String, Value>) {
    let mut out = obj.clone();
    let theirs = stash::read(obj, read_key);
    stash::remove(&mut out, read_key);
    let old = props_of(obj);
    let props = match original(&theirs, "properties", &old) {
        Some(p) => p.clone(),
        None => map_props(&old, f),
    };
    let mut ours = Map::new();
    if map_props(&props, back) != old {
        ours.insert("properties".into(), entry(&old, &props));
    }
    if obj.pointer("/spec/properties").is_some() {
        out["spec"]["properties"] = props;
    }
    (out, theirs, ours)
}

/// v1alpha2 → v1beta1.
pub fn up(old: &Value) -> Value {
    let (mut out, theirs, ours) = convert(old, STASH_V1BETA1, property_up, property_down);
    if let Some(c) = theirs.get("protocolConfigData") {
        out["spec"]["protocolConfigData"] = c.clone();
    }
    stash::write(&mut out, STASH_V1ALPHA2, ours, false);
    out
}

/// v1beta1 → v1alpha2.
pub fn down(new: &Value) -> Value {
    let (mut out, _, mut ours) = convert(new, STASH_V1ALPHA2, property_down, property_up);
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(c) = spec.remove("protocolConfigData")
    {
        ours.insert("protocolConfigData".into(), c);
    }
    stash::write(&mut out, STASH_V1BETA1, ours, false);
    out
}
