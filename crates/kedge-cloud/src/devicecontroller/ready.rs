//! A Device's `Ready` condition: False, with the reason, while its DeviceModel does not exist
//! (a Device applied before its model is accepted, and takes effect when the model appears);
//! True again once it does. Devices whose model exists from the start carry no condition, so
//! they cost no write.

use serde_json::{Value, json};

/// The condition to write on `device`, if its status must change: `missing` is why it is not
/// in effect (`None` when its model exists).
pub fn needed(device: &Value, missing: Option<&str>) -> Option<Value> {
    let current = device
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let now = kedge_core::clock::rfc3339();
    match (missing, current) {
        (Some(why), Some(c)) if c["status"] == "False" && c["message"] == why => None,
        (Some(why), _) => Some(
            json!({"type": "Ready", "status": "False", "reason": "ModelMissing",
            "message": why, "lastTransitionTime": now}),
        ),
        // In effect: only a condition that said otherwise is turned around.
        (None, Some(c)) if c["status"] != "True" => Some(json!({"type": "Ready", "status": "True",
            "reason": "InEffect", "message": "the device's model exists", "lastTransitionTime": now})),
        (None, _) => None,
    }
}

/// `device`'s conditions with `c` in place of the one of its type (a merge patch replaces the
/// whole list, so each writer keeps the others' conditions).
pub fn with(device: &Value, c: Value) -> Vec<Value> {
    let mut cs: Vec<Value> = device
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match cs.iter_mut().find(|x| x["type"] == c["type"]) {
        Some(slot) => *slot = c,
        None => cs.push(c),
    }
    cs
}

/// The `Mapped` condition an edge reports (`{status, reason, message}`), if it changes what
/// `device` shows.
pub fn mapped(device: &Value, reported: &Value) -> Option<Value> {
    let status = match reported.get("status").and_then(Value::as_str) {
        Some(s @ ("True" | "False")) => s,
        _ => return None,
    };
    let (reason, message) = (&reported["reason"], &reported["message"]);
    let current = device
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Mapped"));
    if current.is_some_and(|c| c["status"] == status && c["message"] == *message) {
        return None;
    }
    Some(
        json!({"type": "Mapped", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": kedge_core::clock::rfc3339()}),
    )
}

/// Why a device with model `model` (in `ns`) is not in effect, given whether that model exists.
pub fn missing(ns: &str, model: Option<&str>, exists: bool) -> Option<String> {
    match model {
        None => Some("the device names no DeviceModel (spec.deviceModelRef.name)".into()),
        Some(m) if !exists => Some(format!(
            "device model {m} does not exist in namespace {ns}; the device takes effect when it does"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_is_written_only_when_it_changes() {
        let plain = json!({"status": {}});
        assert_eq!(
            needed(&plain, None),
            None,
            "a model from the start: no write"
        );
        let why = missing("default", Some("m"), false).expect("missing");
        let c = needed(&plain, Some(&why)).expect("written");
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("ModelMissing"))
        );
        let shown = json!({"status": {"conditions": [c]}});
        assert_eq!(needed(&shown, Some(&why)), None, "already says so");
        let back = needed(&shown, None).expect("turned around");
        assert_eq!(back["status"], "True");
        let ok = json!({"status": {"conditions": [back]}});
        assert_eq!(needed(&ok, None), None);
        assert_eq!(missing("default", Some("m"), true), None);
        assert!(missing("default", None, false).is_some());
    }

    #[test]
    fn conditions_are_replaced_by_type_and_mapped_is_written_on_change() {
        let ready = json!({"type": "Ready", "status": "True"});
        let d = json!({"status": {"conditions": [ready]}});
        let pending = json!({"status": "False", "reason": "Pending", "message": "no mapper"});
        let c = mapped(&d, &pending).expect("new");
        let cs = with(&d, c.clone());
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0], ready, "the Ready condition is kept");
        let d2 = json!({"status": {"conditions": cs}});
        assert_eq!(mapped(&d2, &pending), None, "unchanged");
        let taken = json!({"status": "True", "reason": "Taken", "message": "ok"});
        let c2 = mapped(&d2, &taken).expect("changed");
        assert_eq!(with(&d2, c2)[1]["status"], "True");
        assert_eq!(mapped(&d, &json!({"status": "maybe"})), None);
    }
}
