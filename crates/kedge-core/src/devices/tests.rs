use serde_json::{Value, json};

use super::*;

fn seed_device() -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
        "metadata": {"name": "counter", "namespace": "default", "labels": {"description": "counter"}},
        "spec": {"deviceModelRef": {"name": "counter-model"},
            "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["kube-edge-1"]}]}]}},
        "status": {"twins": [{"propertyName": "status",
            "desired": {"metadata": {"type": "string"}, "value": "OFF"},
            "reported": {"metadata": {"type": "string"}, "value": "0"}}]}})
}

fn beta_device() -> Value {
    json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "sensor", "namespace": "default"},
        "spec": {"deviceModelRef": {"name": "temp-model"}, "nodeName": "edge-1",
            "protocol": {"protocolName": "virtualProtocol", "configData": {"sensorId": 1}},
            "properties": [
                {"name": "temperature", "collectCycle": 10000, "reportCycle": 10000,
                 "reportToCloud": true,
                 "visitors": {"protocolName": "virtualProtocol", "configData": {"dataType": "int"}}},
                {"name": "limit", "desired": {"value": "30"}, "reportToCloud": true,
                 "pushMethod": {"mqtt": {"topic": "t", "qos": 1}}}],
            "methods": [{"name": "m", "propertyNames": ["limit"]}],
            "stateReport": {"reportToCloud": true, "reportCycle": 5000}}})
}

fn strip_stashes(mut v: Value) -> Value {
    stash::remove(&mut v, STASH_V1ALPHA2);
    stash::remove(&mut v, STASH_V1BETA1);
    v
}

fn round_trip(kind: &str, v: &Value, via: &str) -> Value {
    let back_to = version_of(v).to_string();
    let other = convert(kind, v, via).expect("converts");
    strip_stashes(convert(kind, &other, &back_to).expect("converts back"))
}

#[test]
fn the_seed_device_reads_as_v1beta1_and_comes_back_exactly() {
    let beta = convert("Device", &seed_device(), V1BETA1).expect("converts");
    assert_eq!(beta["apiVersion"], "devices.kubeedge.io/v1beta1");
    assert_eq!(beta["spec"]["nodeName"], "kube-edge-1");
    assert_eq!(
        beta["spec"]["properties"],
        json!([{"name": "status", "desired": {"metadata": {"type": "string"}, "value": "OFF"}}])
    );
    assert_eq!(
        beta["status"]["twins"],
        json!([{"propertyName": "status", "reported": {"metadata": {"type": "string"}, "value": "0"}}])
    );
    assert!(beta.pointer("/spec/nodeSelector").is_none());
    assert!(beta["metadata"]["annotations"][STASH_V1ALPHA2].is_string());
    assert_eq!(round_trip("Device", &seed_device(), V1BETA1), seed_device());
}

#[test]
fn a_v1beta1_device_comes_back_exactly_and_keeps_its_v1beta1_fields_through_v1alpha2_edits() {
    assert_eq!(
        round_trip("Device", &beta_device(), V1ALPHA2),
        beta_device()
    );
    let mut alpha = convert("Device", &beta_device(), V1ALPHA2).expect("converts");
    assert_eq!(
        alpha["spec"]["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["edge-1"])
    );
    assert_eq!(
        alpha["spec"]["protocol"],
        json!({"customizedProtocol": {"protocolName": "virtualProtocol", "configData": {"sensorId": 1}}})
    );
    assert_eq!(
        alpha["status"]["twins"],
        json!([{"propertyName": "limit", "desired": {"value": "30"}}])
    );
    // The seed's command, through v1alpha2: the desired value changes, nothing else does.
    alpha["status"]["twins"][0]["desired"]["value"] = json!("40");
    let beta = strip_stashes(convert("Device", &alpha, V1BETA1).expect("converts"));
    let mut want = beta_device();
    want["spec"]["properties"][1]["desired"]["value"] = json!("40");
    assert_eq!(beta, want);
}

#[test]
fn an_edit_in_the_other_version_wins_over_the_stash() {
    let mut beta = convert("Device", &seed_device(), V1BETA1).expect("converts");
    beta["spec"]["nodeName"] = json!("kube-edge-2");
    let alpha = convert("Device", &beta, V1ALPHA2).expect("converts");
    assert_eq!(
        alpha["spec"]["nodeSelector"],
        json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "", "operator": "In", "values": ["kube-edge-2"]}]}]})
    );
}

#[test]
fn v1alpha2_protocols_and_visitors_become_flat_config_data() {
    let d = json!({"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
        "metadata": {"name": "m"},
        "spec": {"protocol": {"modbus": {"slaveID": 1},
                "common": {"com": {"serialPort": "/dev/ttyS0", "baudRate": 9600}, "customizedValues": {"x": "y"}}},
            "propertyVisitors": [{"propertyName": "temp", "collectCycle": 500,
                "modbus": {"register": "HoldingRegister", "offset": 2}, "customizedValues": {"k": 1}}],
            "data": {"dataTopic": "t"}}});
    let beta = convert("Device", &d, V1BETA1).expect("converts");
    assert_eq!(
        beta["spec"]["protocol"],
        json!({"protocolName": "modbus", "configData": {"slaveID": 1,
            "com.serialPort": "/dev/ttyS0", "com.baudRate": 9600, "x": "y"}})
    );
    assert_eq!(
        beta["spec"]["properties"],
        json!([{"name": "temp", "collectCycle": 500, "visitors": {"protocolName": "modbus",
            "configData": {"register": "HoldingRegister", "offset": 2, "k": 1}}}])
    );
    assert_eq!(round_trip("Device", &d, V1BETA1), d);
}

#[test]
fn models_convert_both_ways() {
    let seed = json!({"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "DeviceModel",
        "metadata": {"name": "counter-model", "namespace": "default"},
        "spec": {"properties": [{"name": "status", "description": "counter status",
            "type": {"string": {"accessMode": "ReadWrite", "defaultValue": ""}}},
            {"name": "t", "type": {"int": {"accessMode": "ReadOnly", "minimum": -40, "maximum": 125, "unit": "C"}}}]}});
    let beta = convert("DeviceModel", &seed, V1BETA1).expect("converts");
    assert_eq!(
        beta["spec"]["properties"],
        json!([{"name": "status", "description": "counter status", "type": "STRING", "accessMode": "ReadWrite"},
            {"name": "t", "type": "INT", "accessMode": "ReadOnly", "minimum": "-40", "maximum": "125", "unit": "C"}])
    );
    assert_eq!(round_trip("DeviceModel", &seed, V1BETA1), seed);
    let b = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "m"},
        "spec": {"protocol": "virtualProtocol", "protocolConfigData": {"a": 1},
            "properties": [{"name": "v", "type": "STREAM", "accessMode": "ReadOnly",
                "visitors": {"protocolName": "virtualProtocol", "configData": {"q": 1}}}]}});
    let alpha = convert("DeviceModel", &b, V1ALPHA2).expect("converts");
    assert_eq!(
        alpha["spec"]["properties"],
        json!([{"name": "v", "type": {"bytes": {"accessMode": "ReadOnly"}}}])
    );
    assert!(alpha["spec"].get("protocolConfigData").is_none());
    assert_eq!(round_trip("DeviceModel", &b, V1ALPHA2), b);
}

#[test]
fn unknown_versions_and_kinds_are_errors() {
    let mut d = seed_device();
    assert_eq!(
        convert("Device", &d, "v2"),
        Err(ConvertError::Version("v2".into()))
    );
    d["apiVersion"] = json!("devices.kubeedge.io/v9");
    assert!(convert("Device", &d, V1BETA1).is_err());
    assert_eq!(
        convert("DeviceStatus", &seed_device(), V1BETA1),
        Err(ConvertError::Kind("DeviceStatus".into()))
    );
}
