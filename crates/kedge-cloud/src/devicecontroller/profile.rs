//! The device profile KubeEdge v1.14 kept for mappers: one ConfigMap per node and namespace,
//! `device-profile-config-<node>`, key `deviceProfile.json`, listing the node's devices, their
//! models and protocols. kedge keeps it too, and it reaches the edge like any ConfigMap, so
//! mappers written for that layout keep working. Pure: built from the objects.

use std::collections::BTreeMap;

use kedge_core::twin::device;
use serde_json::{Map, Value, json};

/// The ConfigMap name for `node`.
pub fn name(node: &str) -> String {
    format!("device-profile-config-{node}")
}

/// The node a profile ConfigMap is for, from its name.
pub fn node_of(configmap: &str) -> Option<&str> {
    configmap
        .strip_prefix("device-profile-config-")
        .filter(|n| !n.is_empty())
}

pub const KEY: &str = "deviceProfile.json";

/// The largest profile written (a ConfigMap holds at most 1 MiB).
pub const MAX_BYTES: usize = 1 << 20;

/// `spec.protocol`'s type (`modbus`, `opcua`, `bluetooth`, `customizedProtocol`), if any.
fn protocol_type(d: &Value) -> Option<(&String, &Value)> {
    d.pointer("/spec/protocol")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.as_str() != "common")
}

fn instance(d: &Value) -> Value {
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut i = Map::new();
    i.insert("id".into(), json!(name));
    i.insert("name".into(), json!(name));
    if let Some((kind, _)) = protocol_type(d) {
        i.insert("protocol".into(), json!(format!("{kind}-{name}")));
    }
    if let Some(m) = device::model_of(d) {
        i.insert("model".into(), json!(m));
    }
    for (from, to) in [
        ("/status/twins", "twins"),
        ("/spec/data/dataProperties", "dataProperties"),
        ("/spec/data/dataTopic", "dataTopic"),
    ] {
        if let Some(v) = d.pointer(from) {
            i.insert(to.into(), v.clone());
        }
    }
    let model = device::model_of(d).unwrap_or_default();
    let visitors: Vec<Value> = d
        .pointer("/spec/propertyVisitors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| visitor(v, model))
        .collect();
    if !visitors.is_empty() {
        i.insert("propertyVisitors".into(), Value::Array(visitors));
    }
    Value::Object(i)
}

fn visitor(v: &Value, model: &str) -> Value {
    let mut out = Map::new();
    let prop = v.get("propertyName").cloned().unwrap_or(Value::Null);
    out.insert("name".into(), prop.clone());
    out.insert("propertyName".into(), prop);
    out.insert("modelName".into(), json!(model));
    for key in ["collectCycle", "reportCycle", "customizedValues"] {
        if let Some(x) = v.get(key) {
            out.insert(key.into(), x.clone());
        }
    }
    let protocol = v.as_object().into_iter().flatten().find(|(k, _)| {
        matches!(
            k.as_str(),
            "modbus" | "opcua" | "bluetooth" | "customizedProtocol"
        )
    });
    if let Some((k, cfg)) = protocol {
        out.insert("protocol".into(), json!(k));
        out.insert("visitorConfig".into(), cfg.clone());
    }
    Value::Object(out)
}

fn model(m: &Value) -> Value {
    let properties: Vec<Value> = m
        .pointer("/spec/properties")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let (kind, attrs) = p
                .get("type")
                .and_then(Value::as_object)
                .and_then(|t| t.iter().next())
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap_or_default();
            let mut out = Map::new();
            out.insert("name".into(), p.get("name").cloned().unwrap_or(Value::Null));
            out.insert("dataType".into(), json!(kind));
            if let Some(d) = p.get("description") {
                out.insert("description".into(), d.clone());
            }
            for key in ["accessMode", "defaultValue", "minimum", "maximum", "unit"] {
                if let Some(x) = attrs.get(key) {
                    out.insert(key.into(), x.clone());
                }
            }
            Value::Object(out)
        })
        .collect();
    json!({"name": m.pointer("/metadata/name").cloned().unwrap_or(Value::Null), "properties": properties})
}

/// The profile of `devices` (all on one node, in one namespace); `models` by name.
pub fn build(devices: &[&Value], models: &BTreeMap<String, &Value>) -> Value {
    let mut used: BTreeMap<&str, Value> = BTreeMap::new();
    let mut protocols = Vec::new();
    let mut instances = Vec::new();
    for d in devices {
        instances.push(instance(d));
        if let Some(m) = device::model_of(d).and_then(|n| models.get(n).map(|m| (n, m))) {
            used.entry(m.0).or_insert_with(|| model(m.1));
        }
        if let Some((kind, cfg)) = protocol_type(d) {
            let name = d
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut p = Map::new();
            p.insert("name".into(), json!(format!("{kind}-{name}")));
            p.insert("protocol".into(), json!(kind));
            p.insert("protocolConfig".into(), cfg.clone());
            if let Some(c) = d.pointer("/spec/protocol/common") {
                p.insert("protocolCommonConfig".into(), c.clone());
            }
            protocols.push(Value::Object(p));
        }
    }
    let mut profile = Map::new();
    profile.insert("deviceInstances".into(), Value::Array(instances));
    profile.insert(
        "deviceModels".into(),
        Value::Array(used.into_values().collect()),
    );
    if !protocols.is_empty() {
        profile.insert("protocols".into(), Value::Array(protocols));
    }
    Value::Object(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_counter_profile() {
        let d = json!({"metadata": {"name": "counter", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "counter-model"}},
            "status": {"twins": [{"propertyName": "status", "desired": {"value": "OFF", "metadata": {"type": "string"}}}]}});
        let m = json!({"metadata": {"name": "counter-model"}, "spec": {"properties": [
            {"name": "status", "description": "counter status", "type": {"string": {"accessMode": "ReadWrite", "defaultValue": ""}}}]}});
        let models: BTreeMap<String, &Value> =
            [("counter-model".to_string(), &m)].into_iter().collect();
        let p = build(&[&d], &models);
        assert_eq!(p["deviceInstances"][0]["id"], "counter");
        assert_eq!(p["deviceInstances"][0]["model"], "counter-model");
        assert_eq!(
            p["deviceInstances"][0]["twins"][0]["desired"]["value"],
            "OFF"
        );
        assert_eq!(p["deviceModels"][0]["properties"][0]["dataType"], "string");
        assert_eq!(
            p["deviceModels"][0]["properties"][0]["accessMode"],
            "ReadWrite"
        );
        assert!(p.get("protocols").is_none());
        assert_eq!(node_of(&name("kube-edge-1")), Some("kube-edge-1"));
        assert_eq!(node_of("other"), None);
    }

    #[test]
    fn protocols_and_visitors_are_listed() {
        let d = json!({"metadata": {"name": "meter"},
            "spec": {"deviceModelRef": {"name": "m"},
                "protocol": {"modbus": {"slaveID": 1}, "common": {"com": {"serialPort": "/dev/ttyS0"}}},
                "propertyVisitors": [{"propertyName": "temp", "collectCycle": 500, "modbus": {"register": "HoldingRegister", "offset": 2}}]}});
        let p = build(&[&d], &BTreeMap::new());
        assert_eq!(p["deviceInstances"][0]["protocol"], "modbus-meter");
        assert_eq!(p["protocols"][0]["protocolConfig"]["slaveID"], 1);
        assert_eq!(
            p["protocols"][0]["protocolCommonConfig"]["com"]["serialPort"],
            "/dev/ttyS0"
        );
        let v = &p["deviceInstances"][0]["propertyVisitors"][0];
        assert_eq!(v["protocol"], "modbus");
        assert_eq!(v["visitorConfig"]["offset"], 2);
        assert_eq!(v["modelName"], "m");
    }
}
