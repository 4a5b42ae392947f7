//! What DeviceTwin and DeviceController read from Device and DeviceModel objects, v1beta1 (what
//! the cloud sends) or v1alpha2 (what an older kedge cloud sent).

use serde_json::Value;

use super::merge::{Desired, Types};

/// The node a Device is bound to: KubeEdge takes the first value of the first match expression
/// of `spec.nodeSelector` (v1beta1: `spec.nodeName`).
pub fn node_of(device: &Value) -> Option<&str> {
    device
        .pointer("/spec/nodeSelector/nodeSelectorTerms/0/matchExpressions/0/values/0")
        .or_else(|| device.pointer("/spec/nodeName"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// `spec.deviceModelRef.name`.
pub fn model_of(device: &Value) -> Option<&str> {
    device
        .pointer("/spec/deviceModelRef/name")
        .and_then(Value::as_str)
}

/// The device's `description` label (KubeEdge puts it in membership messages).
pub fn description(device: &Value) -> &str {
    device
        .pointer("/metadata/labels/description")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The desired values: v1beta1 `spec.properties[].desired`, or v1alpha2
/// `status.twins[].desired`.
pub fn desired(device: &Value) -> Vec<Desired> {
    let (list, key) = match device.pointer("/spec/properties").and_then(Value::as_array) {
        Some(props) => (Some(props), "name"),
        None => (
            device.pointer("/status/twins").and_then(Value::as_array),
            "propertyName",
        ),
    };
    list.into_iter()
        .flatten()
        .filter_map(|t| {
            let property = t.get(key)?.as_str()?.to_string();
            let d = t.get("desired")?;
            let value = d.get("value")?.as_str()?.to_string();
            let kind = d
                .pointer("/metadata/type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Some(Desired {
                property,
                value,
                kind,
            })
        })
        .collect()
}

/// Property types of a v1alpha2 DeviceModel: `spec.properties[].type` has one key, the type.
pub fn types(model: &Value) -> Types {
    let props = model.pointer("/spec/properties").and_then(Value::as_array);
    props
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?.to_string();
            let kind = match p.get("type")? {
                Value::Object(m) => m.keys().next()?.clone(),
                Value::String(s) => s.to_lowercase(),
                _ => return None,
            };
            Some((name, kind))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_device_and_model_read_as_expected() {
        let device = json!({"metadata": {"name": "counter", "labels": {"description": "counter"}},
            "spec": {"deviceModelRef": {"name": "counter-model"},
                "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["kube-edge-1"]}]}]}},
            "status": {"twins": [{"propertyName": "status",
                "desired": {"metadata": {"type": "string"}, "value": "OFF"},
                "reported": {"metadata": {"type": "string"}, "value": "0"}}]}});
        assert_eq!(node_of(&device), Some("kube-edge-1"));
        assert_eq!(model_of(&device), Some("counter-model"));
        assert_eq!(description(&device), "counter");
        assert_eq!(
            desired(&device),
            [Desired {
                property: "status".into(),
                value: "OFF".into(),
                kind: "string".into()
            }]
        );
        let model = json!({"spec": {"properties": [{"name": "status", "description": "counter status",
            "type": {"string": {"accessMode": "ReadWrite", "defaultValue": ""}}},
            {"name": "temp", "type": {"float": {}}}]}});
        let t = types(&model);
        assert_eq!(t.get("status").map(String::as_str), Some("string"));
        assert_eq!(t.get("temp").map(String::as_str), Some("float"));
        let beta = crate::devices::convert(
            "Device",
            &json!({"apiVersion": "devices.kubeedge.io/v1alpha2",
            "metadata": {}, "spec": device["spec"], "status": device["status"]}),
            "v1beta1",
        )
        .expect("converts");
        assert_eq!(
            desired(&beta),
            desired(&device),
            "v1beta1: from spec.properties"
        );
        assert_eq!(node_of(&beta), Some("kube-edge-1"));
        assert_eq!(node_of(&json!({"spec": {}})), None);
        assert_eq!(node_of(&json!({"spec": {"nodeName": "n2"}})), Some("n2"));
    }
}
