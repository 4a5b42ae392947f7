//! Device and DeviceModel objects (v1beta1; v1alpha2 ones are converted first) as DMI messages,
//! as a stock mapper expects them: the model's defaults merged into the device (the model's
//! property visitors replace the device's, then the device's `configData` keys win; the model's
//! `protocolConfigData` under the device's), every property with a `desired` and a `visitors`
//! with a `configData` map (stock mappers dereference them unchecked), and each configData value
//! wrapped in a protobuf wrapper type. Pure.

use std::collections::BTreeMap;

use kedge_core::devices;
use kedge_core::json::str_at;
use kedge_proto::dmi;
use prost::Message;
use prost_types::Any;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("the device names no DeviceModel (spec.deviceModelRef.name)")]
    NoModelRef,
    #[error("device model {0} is not on this node yet")]
    NoModel(String),
    #[error(
        "{0}: only strings, numbers and booleans cross DMI (a nested object, list or null does not)"
    )]
    Value(String),
    #[error(transparent)]
    Version(#[from] devices::ConvertError),
}

/// `obj` as v1beta1.
pub fn v1beta1(kind: &str, obj: &Value) -> Result<Value, ConvertError> {
    match devices::version_of(obj) {
        devices::V1ALPHA2 => Ok(devices::convert(kind, obj, devices::V1BETA1)?),
        _ => Ok(obj.clone()),
    }
}

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

fn any(type_name: &str, bytes: Vec<u8>) -> Any {
    Any {
        type_url: format!("type.googleapis.com/google.protobuf.{type_name}"),
        value: bytes,
    }
}

/// One configData value: integers as Int64Value (no float32 rounding), other numbers as
/// FloatValue (what stock mappers decode), strings and booleans as theirs.
pub fn wrap(path: &str, v: &Value) -> Result<Any, ConvertError> {
    Ok(match v {
        Value::String(s) => any("StringValue", s.encode_to_vec()),
        Value::Bool(b) => any("BoolValue", b.encode_to_vec()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any("Int64Value", i.encode_to_vec()),
            None => any(
                "FloatValue",
                (n.as_f64().unwrap_or(0.0) as f32).encode_to_vec(),
            ),
        },
        _ => return Err(ConvertError::Value(path.to_string())),
    })
}

/// A wrapped configData value back as JSON (the test mapper reads them so).
pub fn unwrap(a: &Any) -> Option<Value> {
    let name = a.type_url.rsplit('.').next()?;
    let b = a.value.as_slice();
    Some(match name {
        "StringValue" => Value::from(String::decode(b).ok()?),
        "BoolValue" => Value::from(bool::decode(b).ok()?),
        "Int64Value" => Value::from(i64::decode(b).ok()?),
        "Int32Value" => Value::from(i32::decode(b).ok()?),
        "FloatValue" => Value::from(f32::decode(b).ok()? as f64),
        _ => return None,
    })
}

fn custom(path: &str, m: &Map<String, Value>) -> Result<dmi::CustomizedValue, ConvertError> {
    let data = m
        .iter()
        .map(|(k, v)| Ok((k.clone(), wrap(&format!("{path}.{k}"), v)?)))
        .collect::<Result<BTreeMap<_, _>, ConvertError>>()?;
    Ok(dmi::CustomizedValue { data })
}

fn twin_property(v: Option<&Value>) -> dmi::TwinProperty {
    let Some(v) = v else {
        return dmi::TwinProperty::default();
    };
    let metadata = object(v.get("metadata"))
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
        .collect();
    dmi::TwinProperty {
        value: str_at(v, "/value").to_string(),
        metadata,
    }
}

/// The model's property `name`, if it has one.
fn model_property<'a>(model: &'a Value, name: &str) -> Option<&'a Value> {
    let props = model.pointer("/spec/properties")?.as_array()?;
    props.iter().find(|p| str_at(p, "/name") == name)
}

/// A property's visitors after the model's defaults (KubeEdge's `GetOverriddenDevice`).
fn visitors(p: &Value, model: &Value, path: &str) -> Result<dmi::VisitorConfig, ConvertError> {
    let own = p.get("visitors");
    let from_model = model_property(model, str_at(p, "/name")).and_then(|m| m.get("visitors"));
    let (name, mut data) = match from_model {
        Some(m) => (str_at(m, "/protocolName"), object(m.get("configData"))),
        None => (own.map_or("", |v| str_at(v, "/protocolName")), Map::new()),
    };
    data.extend(object(own.and_then(|v| v.get("configData"))));
    Ok(dmi::VisitorConfig {
        protocol_name: name.to_string(),
        config_data: Some(custom(&format!("{path}.visitors.configData"), &data)?),
    })
}

fn push_method(p: &Value, path: &str) -> Result<Option<dmi::PushMethod>, ConvertError> {
    let Some(pm) = p.get("pushMethod") else {
        return Ok(None);
    };
    let s = |ptr: &str| str_at(pm, ptr).to_string();
    let i = |ptr: &str| pm.pointer(ptr).and_then(Value::as_i64).unwrap_or(0);
    let http = pm.get("http").map(|_| dmi::PushMethodHttp {
        hostname: s("/http/hostName"),
        port: i("/http/port"),
        requestpath: s("/http/requestPath"),
        timeout: i("/http/timeout"),
    });
    let mqtt = pm.get("mqtt").map(|_| dmi::PushMethodMqtt {
        address: s("/mqtt/address"),
        topic: s("/mqtt/topic"),
        qos: i("/mqtt/qos") as i32,
        retained: pm.pointer("/mqtt/retained").and_then(Value::as_bool) == Some(true),
    });
    let otel = pm.get("otel").map(|_| dmi::PushMethodOtel {
        endpoint_url: s("/otel/endpointURL"),
    });
    let anomaly_detection = match pm.get("anomalyDetection").and_then(Value::as_object) {
        Some(m) => Some(dmi::AnomalyDetection {
            data: custom(&format!("{path}.pushMethod.anomalyDetection"), m)?.data,
        }),
        None => None,
    };
    Ok(Some(dmi::PushMethod {
        http,
        mqtt,
        db_method: pm.get("dbMethod").map(|_| db_method(pm)),
        otel,
        anomaly_detection,
    }))
}

fn db_method(pm: &Value) -> dmi::DbMethod {
    let s = |ptr: &str| str_at(pm, &format!("/dbMethod{ptr}")).to_string();
    let i = |ptr: &str| {
        pm.pointer(&format!("/dbMethod{ptr}"))
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32
    };
    let has = |ptr: &str| pm.pointer(&format!("/dbMethod{ptr}")).is_some();
    let tag = object(pm.pointer("/dbMethod/influxdb2/influxdb2DataConfig/tag"))
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
        .collect();
    dmi::DbMethod {
        influxdb2: has("/influxdb2").then(|| dmi::DbMethodInfluxdb2 {
            influxdb2_client_config: Some(dmi::Influxdb2ClientConfig {
                url: s("/influxdb2/influxdb2ClientConfig/url"),
                org: s("/influxdb2/influxdb2ClientConfig/org"),
                bucket: s("/influxdb2/influxdb2ClientConfig/bucket"),
            }),
            influxdb2_data_config: Some(dmi::Influxdb2DataConfig {
                measurement: s("/influxdb2/influxdb2DataConfig/measurement"),
                tag,
                field_key: s("/influxdb2/influxdb2DataConfig/fieldKey"),
            }),
        }),
        redis: has("/redis").then(|| dmi::DbMethodRedis {
            redis_client_config: Some(dmi::RedisClientConfig {
                addr: s("/redis/redisClientConfig/addr"),
                db: i("/redis/redisClientConfig/db"),
                poolsize: i("/redis/redisClientConfig/poolsize"),
                min_idle_conns: i("/redis/redisClientConfig/minIdleConns"),
            }),
        }),
        // KubeEdge's JSON names here are `TDEngine` and `TDEngineClientConfig`.
        tdengine: has("/TDEngine").then(|| dmi::DbMethodTdEngine {
            td_engine_client_config: Some(dmi::TdEngineClientConfig {
                addr: s("/TDEngine/TDEngineClientConfig/addr"),
                dbname: s("/TDEngine/TDEngineClientConfig/dbName"),
            }),
        }),
        mysql: has("/mysql").then(|| dmi::DbMethodMySql {
            mysql_client_config: Some(dmi::MySqlClientConfig {
                addr: s("/mysql/mysqlClientConfig/addr"),
                database: s("/mysql/mysqlClientConfig/database"),
                user_name: s("/mysql/mysqlClientConfig/userName"),
            }),
        }),
    }
}

fn property(p: &Value, model: &Value, i: usize) -> Result<dmi::DeviceProperty, ConvertError> {
    let path = format!("spec.properties[{i}]");
    Ok(dmi::DeviceProperty {
        name: str_at(p, "/name").to_string(),
        desired: Some(twin_property(p.get("desired"))),
        visitors: Some(visitors(p, model, &path)?),
        report_cycle: p.get("reportCycle").and_then(Value::as_i64).unwrap_or(0),
        collect_cycle: p.get("collectCycle").and_then(Value::as_i64).unwrap_or(0),
        report_to_cloud: p.get("reportToCloud").and_then(Value::as_bool) == Some(true),
        push_method: push_method(p, &path)?,
    })
}

/// The model `device` needs: `<namespace>/<spec.deviceModelRef.name>`.
pub fn model_key(device: &Value) -> Result<(String, String), ConvertError> {
    let model = str_at(device, "/spec/deviceModelRef/name");
    if model.is_empty() {
        return Err(ConvertError::NoModelRef);
    }
    Ok((
        str_at(device, "/metadata/namespace").to_string(),
        model.to_string(),
    ))
}

/// `device` (v1beta1) merged with `model` (v1beta1), as DMI sends it.
pub fn device(device: &Value, model: &Value) -> Result<dmi::Device, ConvertError> {
    let mut data = object(model.pointer("/spec/protocolConfigData"));
    data.extend(object(device.pointer("/spec/protocol/configData")));
    let props = device.pointer("/spec/properties").and_then(Value::as_array);
    let properties = props
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| property(p, model, i))
        .collect::<Result<_, _>>()?;
    let methods = device.pointer("/spec/methods").and_then(Value::as_array);
    let methods = methods
        .into_iter()
        .flatten()
        .map(|m| dmi::DeviceMethod {
            name: str_at(m, "/name").to_string(),
            description: str_at(m, "/description").to_string(),
            property_names: m
                .get("propertyNames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
        })
        .collect();
    let report = device
        .pointer("/spec/stateReport")
        .or_else(|| device.get("status"));
    let report = report.unwrap_or(&Value::Null);
    Ok(dmi::Device {
        name: str_at(device, "/metadata/name").to_string(),
        namespace: str_at(device, "/metadata/namespace").to_string(),
        spec: Some(dmi::DeviceSpec {
            device_model_reference: str_at(device, "/spec/deviceModelRef/name").to_string(),
            protocol: Some(dmi::ProtocolConfig {
                protocol_name: protocol_of(device).to_string(),
                config_data: Some(custom("spec.protocol.configData", &data)?),
            }),
            properties,
            methods,
        }),
        status: Some(dmi::DeviceStatus {
            twins: Vec::new(),
            report_to_cloud: report.get("reportToCloud").and_then(Value::as_bool) == Some(true),
            report_cycle: report
                .get("reportCycle")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        }),
    })
}

/// `spec.protocol.protocolName` of a v1beta1 Device: the mapper it goes to ("" for devices that
/// speak MQTT themselves).
pub fn protocol_of(device: &Value) -> &str {
    str_at(device, "/spec/protocol/protocolName")
}

/// A v1beta1 DeviceModel as DMI sends it.
pub fn model(model: &Value) -> dmi::DeviceModel {
    let props = model.pointer("/spec/properties").and_then(Value::as_array);
    let properties = props
        .into_iter()
        .flatten()
        .map(|p| {
            let s = |k: &str| str_at(p, &format!("/{k}")).to_string();
            dmi::ModelProperty {
                name: s("name"),
                description: s("description"),
                r#type: s("type"),
                access_mode: s("accessMode"),
                minimum: s("minimum"),
                maximum: s("maximum"),
                unit: s("unit"),
            }
        })
        .collect();
    dmi::DeviceModel {
        name: str_at(model, "/metadata/name").to_string(),
        namespace: str_at(model, "/metadata/namespace").to_string(),
        spec: Some(dmi::DeviceModelSpec {
            properties,
            commands: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model_json() -> Value {
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
            "metadata": {"name": "m", "namespace": "default"},
            "spec": {"protocol": "virtual", "protocolConfigData": {"baud": 9600, "port": "a"},
                "properties": [{"name": "temp", "type": "INT", "accessMode": "ReadOnly",
                    "visitors": {"protocolName": "fromModel", "configData": {"reg": 1, "scale": 0.5}}},
                    {"name": "limit", "type": "STRING"}]}})
    }

    fn device_json() -> Value {
        json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "m"}, "nodeName": "n",
                "protocol": {"protocolName": "virtual", "configData": {"port": "b", "on": true}},
                "properties": [
                    {"name": "temp", "collectCycle": 500, "reportToCloud": true,
                     "visitors": {"protocolName": "own", "configData": {"reg": 7}}},
                    {"name": "limit", "desired": {"value": "30", "metadata": {"type": "string"}}}],
                "stateReport": {"reportToCloud": true, "reportCycle": 2000}}})
    }

    fn config(c: &Option<dmi::CustomizedValue>) -> Value {
        let data = &c.as_ref().expect("configData").data;
        Value::Object(
            data.iter()
                .map(|(k, v)| (k.clone(), unwrap(v).expect("known")))
                .collect(),
        )
    }

    #[test]
    fn the_model_is_merged_in_as_kubeedge_does() {
        let d = device(&device_json(), &model_json()).expect("converts");
        let spec = d.spec.as_ref().expect("spec");
        let protocol = spec.protocol.as_ref().expect("protocol");
        assert_eq!(protocol.protocol_name, "virtual");
        assert_eq!(
            config(&protocol.config_data),
            json!({"baud": 9600, "port": "b", "on": true})
        );
        let temp = &spec.properties[0];
        let v = temp.visitors.as_ref().expect("visitors");
        assert_eq!(
            v.protocol_name, "fromModel",
            "the model's visitors replace the device's"
        );
        assert_eq!(config(&v.config_data), json!({"reg": 7, "scale": 0.5}));
        assert_eq!((temp.collect_cycle, temp.report_to_cloud), (500, true));
        assert_eq!(
            temp.desired,
            Some(dmi::TwinProperty::default()),
            "always sent"
        );
        let limit = &spec.properties[1];
        assert_eq!(limit.desired.as_ref().map(|d| d.value.as_str()), Some("30"));
        assert!(
            limit
                .visitors
                .as_ref()
                .is_some_and(|v| v.config_data.is_some())
        );
        let status = d.status.as_ref().expect("status");
        assert_eq!((status.report_to_cloud, status.report_cycle), (true, 2000));
        assert_eq!(
            model(&model_json()).spec.expect("spec").properties[0].r#type,
            "INT"
        );
    }

    #[test]
    fn nested_values_and_missing_models_are_refused_with_the_reason() {
        let mut bad = device_json();
        bad["spec"]["protocol"]["configData"]["nested"] = json!({"a": 1});
        assert_eq!(
            device(&bad, &model_json()),
            Err(ConvertError::Value(
                "spec.protocol.configData.nested".into()
            ))
        );
        let mut none = device_json();
        none["spec"]["deviceModelRef"] = json!({});
        assert_eq!(model_key(&none), Err(ConvertError::NoModelRef));
        let alpha = json!({"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "m"}},
            "status": {"twins": [{"propertyName": "limit", "desired": {"value": "1"}}]}});
        let beta = v1beta1("Device", &alpha).expect("converts");
        assert_eq!(beta["spec"]["properties"][0]["desired"]["value"], "1");
    }
}
