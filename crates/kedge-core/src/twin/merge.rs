//! How the edge's twins change, and what it publishes about a change. Pure: the caller stores
//! the new twins (SQLite first), then publishes and reports.
//!
//! Version rules (KubeEdge §5.3): a device/app update bumps the `edge` counter of the side it
//! touches; a cloud desired value sets `expected_version.cloud` to the Device's
//! resourceVersion and is applied only when newer than what the edge has.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::value::check;
use super::{MsgTwin, Twin, TwinError, TwinUpdate, TwinValue, Twins, ValueMetadata};

/// Property name → type, from the DeviceModel (empty when the model is not known yet).
pub type Types = BTreeMap<String, String>;

/// Each changed twin before and after (`None`: absent).
pub type Changes = BTreeMap<String, (Option<Twin>, Option<Twin>)>;

/// A cloud desired value: property, value, type (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub property: String,
    pub value: String,
    pub kind: String,
}

fn stamped(value: String, now_ms: i64) -> TwinValue {
    TwinValue {
        value: Some(value),
        metadata: Some(ValueMetadata { timestamp: now_ms }),
    }
}

/// The type of a property the model does not name: the twin's, else the update's, else string.
fn kind_of(existing: Option<&Twin>, msg: &MsgTwin) -> String {
    existing
        .map(|t| t.kind.clone())
        .filter(|k| !k.is_empty())
        .or_else(|| msg.metadata.as_ref().map(|m| m.kind.clone()))
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "string".into())
}

/// A device or app update (`.../twin/update`), all or nothing: validated against the model,
/// then applied. Returns the new twins and what changed.
pub fn device_update(
    twins: &Twins,
    update: &TwinUpdate,
    types: &Types,
    now_ms: i64,
) -> Result<(Twins, Changes), TwinError> {
    let mut next = twins.clone();
    let mut changes = Changes::new();
    for (name, msg) in &update.twin {
        let before = twins.get(name).cloned();
        let Some(msg) = msg else {
            delete(&mut next, name)?;
            if before.is_some() {
                changes.insert(name.clone(), (before, None));
            }
            continue;
        };
        if !types.is_empty() && !types.contains_key(name) {
            let known: Vec<&str> = types.keys().map(String::as_str).collect();
            return Err(TwinError::BadRequest(format!(
                "the device's model has no property {name:?} (it has {known:?})"
            )));
        }
        let kind = types
            .get(name)
            .cloned()
            .unwrap_or_else(|| kind_of(before.as_ref(), msg));
        let t = next.entry(name.clone()).or_insert_with(|| Twin {
            optional: true,
            kind: kind.clone(),
            ..Twin::default()
        });
        t.kind = kind;
        if let Some(v) = msg.expected.as_ref().and_then(|e| e.value.clone()) {
            check(name, &t.kind, &v)?;
            t.expected = Some(stamped(v, now_ms));
            t.expected_version.edge += 1;
        }
        if let Some(v) = msg.actual.as_ref().and_then(|a| a.value.clone()) {
            check(name, &t.kind, &v)?;
            t.actual = Some(stamped(v, now_ms));
            t.actual_version.edge += 1;
        }
        if let Some(o) = msg.optional {
            t.optional = o;
        }
        let after = next.get(name).cloned();
        if after != before {
            changes.insert(name.clone(), (before, after));
        }
    }
    Ok((next, changes))
}

fn delete(twins: &mut Twins, name: &str) -> Result<(), TwinError> {
    match twins.get(name) {
        Some(t) if !t.optional => Err(TwinError::BadRequest(format!(
            "twin {name:?} is not optional and cannot be deleted"
        ))),
        Some(_) => {
            twins.remove(name);
            Ok(())
        }
        None => Ok(()),
    }
}

/// The cloud's desired values at Device resourceVersion `version`. A value is applied when the
/// edge's copy came from an older version (or another value); desired values the cloud no longer
/// has are cleared. Invalid values are skipped and returned.
pub fn cloud_desired(
    twins: &Twins,
    desired: &[Desired],
    types: &Types,
    version: i64,
    now_ms: i64,
) -> (Twins, Changes, Vec<TwinError>) {
    let mut next = twins.clone();
    let mut rejected = Vec::new();
    for d in desired {
        let kind = types
            .get(&d.property)
            .cloned()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| {
                if d.kind.is_empty() {
                    "string".into()
                } else {
                    d.kind.clone()
                }
            });
        if let Err(e) = check(&d.property, &kind, &d.value) {
            rejected.push(e);
            continue;
        }
        let t = next.entry(d.property.clone()).or_insert_with(|| Twin {
            optional: false,
            ..Twin::default()
        });
        t.kind = kind;
        let newer = version > t.expected_version.cloud;
        if newer && t.expected_value() != Some(d.value.as_str()) {
            t.expected = Some(stamped(d.value.clone(), now_ms));
        }
        if newer {
            t.expected_version.cloud = version;
        }
    }
    // A desired value removed in the cloud leaves the edge too (values set locally stay).
    for (name, t) in next.iter_mut() {
        let from_cloud = t.expected_version.cloud > 0 && t.expected_version.cloud < version;
        if from_cloud && !desired.iter().any(|d| &d.property == name) {
            t.expected = None;
            t.expected_version.cloud = version;
        }
    }
    let changes = diff(twins, &next);
    (next, changes, rejected)
}

/// Twins whose values differ between `before` and `after` (versions alone do not count).
fn diff(before: &Twins, after: &Twins) -> Changes {
    let values = |t: &Twin| {
        (
            t.expected_value().map(String::from),
            t.actual_value().map(String::from),
            t.kind.clone(),
        )
    };
    let mut changes = Changes::new();
    for (name, t) in after {
        let old = before.get(name);
        if old.map(values) != Some(values(t)) {
            changes.insert(name.clone(), (old.cloned(), Some(t.clone())));
        }
    }
    for (name, t) in before {
        if !after.contains_key(name) {
            changes.insert(name.clone(), (Some(t.clone()), None));
        }
    }
    changes
}

/// Properties whose expected value differs from the actual one, with the expected value.
pub fn delta(twins: &Twins) -> BTreeMap<String, String> {
    twins
        .iter()
        .filter_map(|(name, t)| {
            let want = t.expected_value()?;
            (t.actual_value() != Some(want)).then(|| (name.clone(), want.to_string()))
        })
        .collect()
}

fn msgs<'a>(twins: impl Iterator<Item = (&'a String, &'a Twin)>) -> serde_json::Map<String, Value> {
    twins
        .map(|(n, t)| {
            (
                n.clone(),
                serde_json::to_value(t.to_msg()).unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `.../twin/update/result` on success: the changed twins.
pub fn update_result(event_id: &str, changes: &Changes, now_ms: i64) -> Value {
    let current = changes
        .iter()
        .filter_map(|(n, (_, c))| c.as_ref().map(|c| (n, c)));
    json!({"event_id": event_id, "timestamp": now_ms, "twin": msgs(current)})
}

/// Any `.../result` for a refused message.
pub fn error_result(event_id: &str, e: &TwinError, now_ms: i64) -> Value {
    json!({"event_id": event_id, "timestamp": now_ms, "code": e.code(), "reason": e.to_string()})
}

/// `.../twin/get/result`: every twin.
pub fn get_result(event_id: &str, twins: &Twins, now_ms: i64) -> Value {
    json!({"event_id": event_id, "timestamp": now_ms, "twin": msgs(twins.iter())})
}

/// `.../twin/update/document`: each changed twin's last and current state.
pub fn document(changes: &Changes, now_ms: i64) -> Value {
    let twin: serde_json::Map<String, Value> = changes
        .iter()
        .map(|(n, (last, current))| {
            let side = |t: &Option<Twin>| {
                t.as_ref().map_or(Value::Null, |t| {
                    serde_json::to_value(t.to_msg()).unwrap_or(Value::Null)
                })
            };
            (
                n.clone(),
                json!({"last": side(last), "current": side(current)}),
            )
        })
        .collect();
    json!({"event_id": new_event_id(), "timestamp": now_ms, "twin": twin})
}

/// `.../twin/update/delta`, when some expected value differs from the actual one.
pub fn delta_message(twins: &Twins, now_ms: i64) -> Option<Value> {
    let d = delta(twins);
    if d.is_empty() {
        return None;
    }
    let with_expected = twins.iter().filter(|(_, t)| t.expected_value().is_some());
    Some(
        json!({"event_id": new_event_id(), "timestamp": now_ms, "twin": msgs(with_expected), "delta": d}),
    )
}

/// The edge→cloud report (`device/<id>/twin/edge_updated`): every twin's actual value, so a
/// newer report always carries everything an older one did (reports coalesce safely).
pub fn edge_report(twins: &Twins, now_ms: i64) -> Value {
    let twin: serde_json::Map<String, Value> = twins
        .iter()
        .filter(|(_, t)| t.actual.is_some())
        .map(|(n, t)| {
            // `expected` too: the cloud shows it as the DeviceStatus's observedDesired.
            let m = MsgTwin {
                actual: t.actual.clone(),
                expected: t.expected.clone(),
                metadata: Some(super::TypeMetadata {
                    kind: t.kind.clone(),
                }),
                actual_version: Some(t.actual_version),
                expected_version: t.expected.as_ref().map(|_| t.expected_version),
                ..MsgTwin::default()
            };
            (n.clone(), serde_json::to_value(m).unwrap_or(Value::Null))
        })
        .collect();
    json!({"event_id": new_event_id(), "timestamp": now_ms, "twin": twin})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::parse_update;

    fn types() -> Types {
        [
            ("status".to_string(), "string".to_string()),
            ("temp".into(), "float".into()),
        ]
        .into_iter()
        .collect()
    }

    fn desired(value: &str) -> Vec<Desired> {
        vec![Desired {
            property: "status".into(),
            value: value.into(),
            kind: "string".into(),
        }]
    }

    #[test]
    fn cloud_desired_applies_once_per_newer_version_and_makes_a_delta() {
        let (t, changes, rejected) = cloud_desired(&Twins::new(), &desired("OFF"), &types(), 10, 1);
        assert!(rejected.is_empty());
        assert_eq!(t["status"].expected_value(), Some("OFF"));
        assert_eq!(changes.len(), 1);
        assert_eq!(delta(&t).get("status").map(String::as_str), Some("OFF"));
        // The same or an older version changes nothing.
        let (same, changes, _) = cloud_desired(&t, &desired("ON"), &types(), 10, 2);
        assert_eq!(same["status"].expected_value(), Some("OFF"));
        assert!(changes.is_empty());
        let (t, changes, _) = cloud_desired(&t, &desired("ON"), &types(), 11, 3);
        assert_eq!(t["status"].expected_value(), Some("ON"));
        assert_eq!(changes.len(), 1);
        let msg = delta_message(&t, 3).expect("a delta");
        assert_eq!(msg["delta"]["status"], "ON");
        assert_eq!(msg["twin"]["status"]["expected"]["value"], "ON");
    }

    #[test]
    fn a_device_report_sets_actual_and_the_delta_follows_it() {
        let (t, _, _) = cloud_desired(&Twins::new(), &desired("ON"), &types(), 10, 1);
        let u = parse_update(br#"{"event_id":"e","twin":{"status":{"actual":{"value":"ON"}}}}"#)
            .expect("u");
        let (t, changes) = device_update(&t, &u, &types(), 5).expect("applied");
        assert_eq!(t["status"].actual_value(), Some("ON"));
        assert_eq!(t["status"].actual_version.edge, 1);
        assert_eq!(
            t["status"].expected_value(),
            Some("ON"),
            "desired untouched"
        );
        assert!(delta(&t).is_empty(), "in sync");
        let r = update_result("e", &changes, 5);
        assert_eq!(r["twin"]["status"]["actual"]["value"], "ON");
        let doc = document(&changes, 5);
        assert_eq!(doc["twin"]["status"]["last"]["actual"], Value::Null);
        assert_eq!(doc["twin"]["status"]["current"]["actual"]["value"], "ON");
        let rep = edge_report(&t, 5);
        assert_eq!(rep["twin"]["status"]["actual"]["value"], "ON");
        assert_eq!(rep["twin"]["status"]["actual_version"]["edge"], 1);
    }

    #[test]
    fn device_updates_are_checked_all_or_nothing() {
        let u = parse_update(
            br#"{"twin":{"status":{"actual":{"value":"ok"}},"temp":{"actual":{"value":"warm"}}}}"#,
        )
        .expect("u");
        let e = device_update(&Twins::new(), &u, &types(), 1).expect_err("bad float");
        assert_eq!(e.code(), 400);
        let u = parse_update(br#"{"twin":{"humidity":{"actual":{"value":"3"}}}}"#).expect("u");
        let e = device_update(&Twins::new(), &u, &types(), 1).expect_err("not in the model");
        assert!(e.to_string().contains("humidity"), "{e}");
        // Without a model any property is a string.
        let (t, _) = device_update(&Twins::new(), &u, &Types::new(), 1).expect("no model");
        assert_eq!(t["humidity"].kind, "string");
        assert!(t["humidity"].optional);
    }

    #[test]
    fn values_with_spaces_are_fine_and_null_deletes_only_optional_twins() {
        let u = parse_update(br#"{"twin":{"status":{"actual":{"value":"a value with spaces"}}}}"#)
            .expect("u");
        let (t, _) = device_update(&Twins::new(), &u, &types(), 1).expect("spaces");
        assert_eq!(t["status"].actual_value(), Some("a value with spaces"));
        let del = parse_update(br#"{"twin":{"status":null}}"#).expect("u");
        let (gone, changes) = device_update(&t, &del, &types(), 2).expect("optional");
        assert!(gone.is_empty());
        assert_eq!(changes.len(), 1);
        let (from_cloud, _, _) = cloud_desired(&Twins::new(), &desired("OFF"), &types(), 1, 1);
        assert!(
            device_update(&from_cloud, &del, &types(), 2).is_err(),
            "cloud twins are not optional"
        );
    }

    #[test]
    fn desired_removed_in_the_cloud_leaves_the_edge_and_invalid_desired_is_skipped() {
        let (t, _, _) = cloud_desired(&Twins::new(), &desired("OFF"), &types(), 1, 1);
        let (t, changes, _) = cloud_desired(&t, &[], &types(), 2, 2);
        assert_eq!(t["status"].expected_value(), None);
        assert_eq!(changes.len(), 1);
        let bad = vec![Desired {
            property: "temp".into(),
            value: "hot".into(),
            kind: "float".into(),
        }];
        let (t2, _, rejected) = cloud_desired(&t, &bad, &types(), 3, 3);
        assert_eq!(rejected.len(), 1);
        assert!(!t2.contains_key("temp"));
    }
}
