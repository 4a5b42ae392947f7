//! The cloud side of a twin report: an edge's `edge_updated` content applied to a twin list —
//! a DeviceStatus's `status.twins` (`reported` and `observedDesired`, as cloudcore writes them)
//! and, for devices used through v1alpha2, the Device's `status.twins` (`reported` only, so
//! `desired` is never clobbered). Values carry `metadata.timestamp` (a string of milliseconds)
//! and `metadata.type`; a reported property the list lacks gets an entry of its own.

use serde_json::{Map, Value, json};

use super::{MsgTwin, TwinError};

/// One property of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub property: String,
    pub value: String,
    pub timestamp: i64,
    pub kind: String,
    /// The desired value the device says it holds (`expected`).
    pub observed: Option<(String, i64)>,
}

/// Which twin list a report is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A DeviceStatus: `reported` and `observedDesired`.
    DeviceStatus,
    /// A v1alpha2 Device's status: `reported`.
    Device,
}

/// The reported twins of a report.
pub fn reported(content: &Value) -> Result<Vec<Reported>, TwinError> {
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
        let observed = t.expected.and_then(|e| {
            let ts = e.metadata.map_or(0, |m| m.timestamp);
            Some((e.value?, ts))
        });
        out.push(Reported {
            property: name.clone(),
            value,
            timestamp: actual.metadata.map_or(0, |m| m.timestamp),
            kind: t
                .metadata
                .map(|m| m.kind)
                .unwrap_or_else(|| "string".into()),
            observed,
        });
    }
    Ok(out)
}

/// A `{value, metadata: {timestamp, type}}` twin property.
fn property(value: &str, ts: i64, kind: &str) -> Value {
    json!({"value": value, "metadata": {"timestamp": ts.to_string(), "type": kind}})
}

/// `twins` with the report applied; `None` when nothing changes.
pub fn apply(
    twins: &[Value],
    content: &Value,
    target: Target,
) -> Result<Option<Vec<Value>>, TwinError> {
    let mut next = twins.to_vec();
    for r in reported(content)? {
        let slot = next
            .iter_mut()
            .find(|t| t.get("propertyName").and_then(Value::as_str) == Some(r.property.as_str()));
        let t = match slot {
            Some(Value::Object(t)) => t,
            _ => {
                let mut t = Map::new();
                t.insert("propertyName".into(), json!(r.property));
                next.push(Value::Object(t));
                match next.last_mut() {
                    Some(Value::Object(t)) => t,
                    _ => continue,
                }
            }
        };
        t.insert("reported".into(), property(&r.value, r.timestamp, &r.kind));
        if target == Target::DeviceStatus
            && let Some((value, ts)) = &r.observed
        {
            t.insert("observedDesired".into(), property(value, *ts, &r.kind));
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
        let next = apply(&seed_twins(), &report, Target::Device)
            .expect("ok")
            .expect("changed");
        assert_eq!(next[0]["reported"]["value"], "5");
        assert_eq!(next[0]["reported"]["metadata"]["timestamp"], "1700");
        assert_eq!(next[0]["desired"]["value"], "OFF", "desired untouched");
        assert_eq!(
            apply(&next, &report, Target::Device).expect("ok"),
            None,
            "same report: no change"
        );
    }

    #[test]
    fn a_new_property_gets_its_own_twin_and_bad_reports_are_400() {
        let report =
            json!({"twin": {"temp": {"actual": {"value": "21.5"}, "metadata": {"type": "float"}}}});
        let next = apply(&seed_twins(), &report, Target::Device)
            .expect("ok")
            .expect("changed");
        assert_eq!(next.len(), 2);
        assert_eq!(next[1]["propertyName"], "temp");
        assert_eq!(next[1]["reported"]["metadata"]["type"], "float");
        for bad in [
            json!({}),
            json!({"twin": 1}),
            json!({"twin": {"a": {"actual": 3}}}),
        ] {
            assert_eq!(
                apply(&seed_twins(), &bad, Target::Device).map_err(|e| e.code()),
                Err(400),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_device_status_gets_reported_and_observed_desired() {
        let report = json!({"twin": {"status": {
            "actual": {"value": "5", "metadata": {"timestamp": 1700}},
            "expected": {"value": "ON", "metadata": {"timestamp": 1600}},
            "metadata": {"type": "string"}}}});
        let next = apply(&[], &report, Target::DeviceStatus)
            .expect("ok")
            .expect("changed");
        assert_eq!(
            next,
            [json!({"propertyName": "status",
                "reported": {"value": "5", "metadata": {"timestamp": "1700", "type": "string"}},
                "observedDesired": {"value": "ON", "metadata": {"timestamp": "1600", "type": "string"}}})]
        );
        let on_device = apply(&[], &report, Target::Device)
            .expect("ok")
            .expect("changed");
        assert!(on_device[0].get("observedDesired").is_none());
    }
}
