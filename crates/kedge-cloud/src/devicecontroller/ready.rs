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
}
