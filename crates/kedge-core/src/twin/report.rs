//! The cloud side of a twin report: an edge's `edge_updated` content applied to a v1alpha2
//! Device's `status.twins`. Only `reported` is written (value, `metadata.timestamp` as a string
//! of milliseconds, `metadata.type`), so `desired` is never clobbered; a reported property the
//! Device does not list yet gets a twin entry of its own.

use serde_json::{Map, Value, json};

use super::{MsgTwin, TwinError};

/// The reported twins of a report: property → (value, timestamp ms, type).
pub fn reported(content: &Value) -> Result<Vec<(String, String, i64, String)>, TwinError> {
    let twins = content
        .get("twin")
        .and_then(Value::as_object)
        .ok_or_else(|| TwinError::BadRequest("a twin report has a \"twin\" object".into()))?;
    let mut out = Vec::with_capacity(twins.len());
    for (name, t) in twins {
        let t: MsgTwin = serde_json::from_value(t.clone())
            .map_err(|e| TwinError::BadRequest(format!("twin {name:?}: {e}")))?;
        let Some(actual) = t.actual else { continue };
        let Some(value) = actual.value else { continue };
        let ts = actual.metadata.map_or(0, |m| m.timestamp);
        let kind = t
            .metadata
            .map(|m| m.kind)
            .unwrap_or_else(|| "string".into());
        out.push((name.clone(), value, ts, kind));
    }
    Ok(out)
}

/// `status.twins` with the report applied; `None` when nothing changes.
pub fn apply(twins: &[Value], content: &Value) -> Result<Option<Vec<Value>>, TwinError> {
    let mut next = twins.to_vec();
    for (name, value, ts, kind) in reported(content)? {
        let reported =
            json!({"value": value, "metadata": {"timestamp": ts.to_string(), "type": kind}});
        let slot = next
            .iter_mut()
            .find(|t| t.get("propertyName").and_then(Value::as_str) == Some(name.as_str()));
        match slot {
            Some(Value::Object(t)) => {
                t.insert("reported".into(), reported);
            }
            _ => {
                let mut t = Map::new();
                t.insert("propertyName".into(), Value::String(name));
                t.insert("reported".into(), reported);
                next.push(Value::Object(t));
            }
        }
    }
    Ok((next != twins).then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_twins() -> Vec<Value> {
        vec![json!({"propertyName": "status",
            "desired": {"metadata": {"type": "string"}, "value": "OFF"},
            "reported": {"metadata": {"type": "string"}, "value": "0"}})]
    }

    #[test]
    fn a_report_sets_reported_and_leaves_desired() {
        let report = json!({"twin": {"status": {"actual": {"value": "5", "metadata": {"timestamp": 1700}}, "metadata": {"type": "string"}}}});
        let next = apply(&seed_twins(), &report).expect("ok").expect("changed");
        assert_eq!(next[0]["reported"]["value"], "5");
        assert_eq!(next[0]["reported"]["metadata"]["timestamp"], "1700");
        assert_eq!(next[0]["desired"]["value"], "OFF", "desired untouched");
        assert_eq!(
            apply(&next, &report).expect("ok"),
            None,
            "same report: no change"
        );
    }

    #[test]
    fn a_new_property_gets_its_own_twin_and_bad_reports_are_400() {
        let report =
            json!({"twin": {"temp": {"actual": {"value": "21.5"}, "metadata": {"type": "float"}}}});
        let next = apply(&seed_twins(), &report).expect("ok").expect("changed");
        assert_eq!(next.len(), 2);
        assert_eq!(next[1]["propertyName"], "temp");
        assert_eq!(next[1]["reported"]["metadata"]["type"], "float");
        for bad in [
            json!({}),
            json!({"twin": 1}),
            json!({"twin": {"a": {"actual": 3}}}),
        ] {
            assert_eq!(
                apply(&seed_twins(), &bad).map_err(|e| e.code()),
                Err(400),
                "{bad}"
            );
        }
    }
}
