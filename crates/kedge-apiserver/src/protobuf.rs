//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which client-go
//! sends for every built-in kind when asked to (kubectl's typed commands, Kubernetes' own
//! components, operators). A body is the magic `k8s\0` followed by a `runtime.Unknown` whose
//! `raw` field (2) holds the object. The object is decoded with Kubernetes' own `.proto`
//! definitions (compiled at build time, see `build.rs`): Kubernetes names each protobuf field as
//! its JSON field, so one walk turns any kind into the JSON the rest of the server handles. A few
//! apimachinery messages have a JSON form of their own (times, quantities, int-or-string, raw
//! JSON); those are translated here.

use std::sync::LazyLock;

use base64::Engine;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Pb,
};
use serde_json::{Map, Value, json};

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/k8s.bin"))[..])
        .map_err(|e| e.to_string())
});

/// Why a protobuf body was not decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    /// A kind without protobuf definitions (custom resources have none, as in Kubernetes).
    #[error(
        "protobuf bodies are accepted for Kubernetes' built-in kinds only; send {0} as application/json or application/yaml"
    )]
    Unsupported(String),
    #[error("the protobuf body is not valid: {0}")]
    Malformed(String),
}

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// The protobuf package of a built-in API group's version (`None`: not built in).
fn package(group: &str, version: &str) -> Option<String> {
    let short = match group {
        "" => "core",
        "apps" => "apps",
        "batch" => "batch",
        "autoscaling" => "autoscaling",
        "coordination.k8s.io" => "coordination",
        _ => return None,
    };
    Some(format!("k8s.io.api.{short}.{version}"))
}

/// Decodes a protobuf body holding a `kind` of `group/version` into its JSON form.
pub fn decode(group: &str, version: &str, kind: &str, body: &[u8]) -> Result<Value, ProtoError> {
    let unsupported = || ProtoError::Unsupported(kind.to_string());
    let name = package(group, version).ok_or_else(unsupported)? + "." + kind;
    let desc = message_named(&name).ok_or_else(unsupported)?;
    let mut obj = decode_message(&desc, body)?;
    let api_version = crate::registry::group_version(group, version);
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

/// Decodes a protobuf `DeleteOptions` body (client-go sends one with every typed delete).
pub fn delete_options(body: &[u8]) -> Result<Value, ProtoError> {
    let desc = message_named(&format!("{META}.DeleteOptions"))
        .ok_or_else(|| ProtoError::Unsupported("DeleteOptions".into()))?;
    decode_message(&desc, body).map(Value::Object)
}

fn message_named(name: &str) -> Option<MessageDescriptor> {
    POOL.as_ref().ok()?.get_message_by_name(name)
}

fn decode_message(desc: &MessageDescriptor, body: &[u8]) -> Result<Map<String, Value>, ProtoError> {
    let malformed = |m: &str| ProtoError::Malformed(m.to_string());
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| malformed("it does not start with the Kubernetes magic number"))?;
    let envelope = message_named("k8s.io.apimachinery.pkg.runtime.Unknown")
        .ok_or_else(|| malformed("no runtime.Unknown definition"))?;
    let envelope = DynamicMessage::decode(envelope, unknown)
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let raw = envelope
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| malformed("the envelope holds no object"))?;
    let msg = DynamicMessage::decode(desc.clone(), raw.as_ref())
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    match message(&msg) {
        Value::Object(m) => Ok(m),
        _ => Err(malformed("the object is not a message")),
    }
}

/// A message's JSON form: its set fields by name, with apimachinery's special messages in their
/// JSON shapes. Empty strings are left out: gogo-protobuf writes every non-pointer string, where
/// JSON omits empty ones (and defaulting fills only what is missing).
fn message(msg: &DynamicMessage) -> Value {
    if let Some(v) = special(msg) {
        return v;
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        if let Some(v) = field_value(value) {
            out.insert(field.name().to_string(), v);
        }
    }
    Value::Object(out)
}

fn field_value(v: &Pb) -> Option<Value> {
    Some(match v {
        Pb::String(s) if s.is_empty() => return None,
        Pb::Message(m) => {
            let v = message(m);
            if v.is_null() {
                return None;
            }
            v
        }
        Pb::List(items) => Value::Array(items.iter().map(element).collect()),
        Pb::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                m.insert(map_key(k), element(v));
            }
            Value::Object(m)
        }
        other => scalar(other),
    })
}

/// A list element or map value: empty strings kept (they are data there).
fn element(v: &Pb) -> Value {
    match v {
        Pb::String(s) => json!(s),
        Pb::Message(m) => message(m),
        other => field_value(other).unwrap_or(Value::Null),
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn scalar(v: &Pb) -> Value {
    match v {
        Pb::Bool(b) => json!(b),
        Pb::I32(n) => json!(n),
        Pb::I64(n) => json!(n),
        Pb::U32(n) => json!(n),
        Pb::U64(n) => json!(n),
        Pb::F32(n) => json!(n),
        Pb::F64(n) => json!(n),
        Pb::String(s) => json!(s),
        Pb::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Pb::EnumNumber(n) => json!(n),
        Pb::Message(_) | Pb::List(_) | Pb::Map(_) => element(v),
    }
}

/// The apimachinery messages whose JSON is not an object of their fields. `Some(Null)`: absent
/// (a zero time).
fn special(msg: &DynamicMessage) -> Option<Value> {
    let get = |name: &str| msg.get_field_by_name(name);
    let int = |name: &str| get(name).and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)));
    let text = |name: &str| {
        get(name)
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    Some(match msg.descriptor().full_name() {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => time(int("seconds"), int("nanos"), false),
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => {
            time(int("seconds"), int("nanos"), true)
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => json!(text("string")),
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => match int("type") {
            Some(1) => json!(text("strVal")),
            _ => json!(int("intVal").unwrap_or(0)),
        },
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => {
            json!(format!("{}s", int("duration").unwrap_or(0) as f64 / 1e9))
        }
        "k8s.io.apimachinery.pkg.runtime.RawExtension"
        | "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = get("raw")
                .and_then(|v| v.as_bytes().cloned())
                .unwrap_or_default();
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        }
        _ => return None,
    })
}

/// RFC 3339 in UTC, as Go's `metav1.Time` (seconds) and `MicroTime` (microseconds) print.
fn time(seconds: Option<i64>, nanos: Option<i64>, micro: bool) -> Value {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if s == 0 && n == 0 {
        return Value::Null;
    }
    let Ok(t) = jiff::Timestamp::new(s, n.clamp(0, 999_999_999) as i32) else {
        return Value::Null;
    };
    let t = t.to_zoned(jiff::tz::TimeZone::UTC);
    if micro {
        json!(t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    } else {
        json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u64, b: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3 | 2) as u8, b.len() as u8];
        v.extend_from_slice(b);
        v
    }

    fn envelope(raw: &[u8]) -> Vec<u8> {
        let mut v = b"k8s\0".to_vec();
        v.extend(ld(1, &[ld(1, b"v1"), ld(2, b"ConfigMap")].concat()));
        v.extend(ld(2, raw));
        v
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [
            ld(1, b"cm1"),
            ld(2, b""),
            ld(3, b"default"),
            ld(11, &[ld(1, b"app"), ld(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            ld(1, &meta),
            ld(2, &[ld(1, b"k"), ld(2, b"")].concat()),
            vec![4 << 3, 1],
        ]
        .concat();
        let v = decode("", "v1", "ConfigMap", &envelope(&raw)).expect("decodes");
        assert_eq!(
            v,
            json!({"metadata": {"name": "cm1", "namespace": "default", "labels": {"app": "web"}},
                   "data": {"k": ""}, "immutable": true, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn secret_bytes_become_base64() {
        let raw = [
            ld(1, &ld(1, b"s")),
            ld(2, &[ld(1, b"pw"), ld(2, b"hunter2")].concat()),
            ld(3, b"Opaque"),
        ]
        .concat();
        let v = decode("", "v1", "Secret", &envelope(&raw)).expect("decodes");
        assert_eq!(v["data"]["pw"], "aHVudGVyMg==");
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn apimachinery_messages_take_their_json_shapes() {
        // A Deployment: replicas 3, a rolling update with maxSurge "50%" and maxUnavailable 1,
        // a creation time, and a container requesting 100m CPU.
        let int_or_string = |b: Vec<u8>| b;
        let surge = int_or_string([vec![1 << 3, 1], ld(3, b"50%")].concat());
        let unavailable = int_or_string(vec![1 << 3, 0, 2 << 3, 1]);
        let strategy = [
            ld(1, b"RollingUpdate"),
            ld(2, &[ld(1, &unavailable), ld(2, &surge)].concat()),
        ]
        .concat();
        let quantity = ld(1, b"100m");
        let resources = ld(2, &[ld(1, b"cpu"), ld(2, &quantity)].concat());
        let container = [ld(1, b"web"), ld(2, b"nginx:1"), ld(8, &resources)].concat();
        let template = ld(2, &ld(2, &container));
        let spec = [vec![1 << 3, 3], ld(3, &template), ld(4, &strategy)].concat();
        let created = [vec![1 << 3], varint(1_700_000_000)].concat();
        let meta = [ld(1, b"web"), ld(8, &created)].concat();
        let raw = [ld(1, &meta), ld(2, &spec)].concat();
        let v = decode("apps", "v1", "Deployment", &envelope(&raw)).expect("decodes");
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "50%");
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 1);
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1");
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    }

    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn garbage_and_custom_kinds_are_explained() {
        let e = decode("", "v1", "ConfigMap", b"nope").expect_err("magic");
        assert!(e.to_string().contains("magic"), "{e}");
        let truncated = [b"k8s\0".as_slice(), &[0x12, 0x10, 1]].concat();
        assert!(matches!(
            decode("", "v1", "ConfigMap", &truncated),
            Err(ProtoError::Malformed(_))
        ));
        let e =
            decode("devices.kubeedge.io", "v1beta1", "Device", &envelope(&[])).expect_err("a CRD");
        assert!(matches!(e, ProtoError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("application/json"));
    }
}
