//! Kubernetes protobuf request bodies, for the kinds kubectl's imperative generators create
//! (`kubectl create namespace|configmap|secret`): client-go sends those as protobuf and does not
//! fall back to JSON. A body is the magic `k8s\0` followed by a `runtime.Unknown` whose `raw`
//! field (2) holds the object; each kind is decoded with a table of its field numbers (from
//! Kubernetes' `generated.proto`) into the JSON the rest of the server handles. Fields not in the
//! tables are skipped.

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum Field {
    Str(&'static str),
    Bool(&'static str),
    /// `repeated string`.
    Strings(&'static str),
    /// `map<string, string>`.
    MapStr(&'static str),
    /// `map<string, bytes>`, shown as base64 as in JSON.
    MapBytes(&'static str),
    Msg(&'static str, &'static [(u64, Field)]),
}

use Field::*;

const OBJECT_META: &[(u64, Field)] = &[
    (1, Str("name")),
    (2, Str("generateName")),
    (3, Str("namespace")),
    (11, MapStr("labels")),
    (12, MapStr("annotations")),
    (14, Strings("finalizers")),
];
const NAMESPACE: &[(u64, Field)] = &[
    (1, Msg("metadata", OBJECT_META)),
    (2, Msg("spec", &[(1, Strings("finalizers"))])),
];
const CONFIG_MAP: &[(u64, Field)] = &[
    (1, Msg("metadata", OBJECT_META)),
    (2, MapStr("data")),
    (3, MapBytes("binaryData")),
    (4, Bool("immutable")),
];
const SECRET: &[(u64, Field)] = &[
    (1, Msg("metadata", OBJECT_META)),
    (2, MapBytes("data")),
    (3, Str("type")),
    (4, MapStr("stringData")),
    (5, Bool("immutable")),
];

/// Decodes a protobuf body for resource `key` (kind and apiVersion come from the URL).
/// `Err` says why it cannot be decoded.
pub fn decode(key: &str, kind: &str, body: &[u8]) -> Result<Value, String> {
    let schema = match key {
        "namespaces" => NAMESPACE,
        "configmaps" => CONFIG_MAP,
        "secrets" => SECRET,
        _ => {
            return Err(format!(
                "protobuf bodies are accepted for namespaces, configmaps and secrets only; send {key} as application/json or application/yaml"
            ));
        }
    };
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or("the protobuf body does not start with the Kubernetes magic number")?;
    let raw = fields(unknown)?
        .into_iter()
        .find(|(n, _)| *n == 2)
        .and_then(|(_, v)| v.bytes())
        .ok_or("the protobuf envelope has no object")?;
    let mut obj = message(raw, schema)?;
    obj.insert("apiVersion".into(), json!("v1"));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Wire<'a> {
    fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Wire::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated protobuf varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("protobuf varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let (mut pos, mut out) = (0, Vec::new());
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                let end = end.ok_or("truncated protobuf field")?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            1 | 5 => {
                pos += if tag & 7 == 1 { 8 } else { 4 };
                Wire::Fixed
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        out.push((tag >> 3, wire));
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a protobuf string is not UTF-8".to_string())
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut k, mut v) = (String::new(), &b[..0]);
    for (n, w) in fields(b)? {
        match (n, w.bytes()) {
            (1, Some(x)) => k = utf8(x)?,
            (2, Some(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn message(buf: &[u8], schema: &[(u64, Field)]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (n, w) in fields(buf)? {
        let Some((_, field)) = schema.iter().find(|(f, _)| *f == n) else {
            continue;
        };
        match (*field, w) {
            (Str(name), Wire::Bytes(b)) => {
                out.insert(name.into(), json!(utf8(b)?));
            }
            (Bool(name), Wire::Varint(v)) => {
                out.insert(name.into(), json!(v != 0));
            }
            (Strings(name), Wire::Bytes(b)) => push(&mut out, name, json!(utf8(b)?)),
            (MapStr(name), Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                insert(&mut out, name, k, json!(utf8(v)?));
            }
            (MapBytes(name), Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let enc = base64::engine::general_purpose::STANDARD.encode(v);
                insert(&mut out, name, k, json!(enc));
            }
            (Msg(name, sub), Wire::Bytes(b)) => {
                out.insert(name.into(), Value::Object(message(b, sub)?));
            }
            _ => return Err(format!("protobuf field {n} has the wrong wire type")),
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, name: &str, v: Value) {
    if let Some(Value::Array(a)) = out.get_mut(name) {
        a.push(v);
    } else {
        out.insert(name.into(), json!([v]));
    }
}

fn insert(out: &mut Map<String, Value>, name: &str, k: String, v: Value) {
    if let Some(Value::Object(m)) = out.get_mut(name) {
        m.insert(k, v);
    } else {
        out.insert(name.into(), json!({k: v}));
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
            ld(3, b"default"),
            ld(11, &[ld(1, b"app"), ld(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            ld(1, &meta),
            ld(2, &[ld(1, b"k"), ld(2, b"v")].concat()),
            vec![4 << 3, 1],
        ]
        .concat();
        let v = decode("configmaps", "ConfigMap", &envelope(&raw)).expect("decodes");
        assert_eq!(
            v,
            json!({"metadata": {"name": "cm1", "namespace": "default", "labels": {"app": "web"}},
                   "data": {"k": "v"}, "immutable": true, "apiVersion": "v1", "kind": "ConfigMap"})
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
        let v = decode("secrets", "Secret", &envelope(&raw)).expect("decodes");
        assert_eq!(v["data"]["pw"], "aHVudGVyMg==");
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn garbage_and_other_kinds_are_explained() {
        assert!(
            decode("configmaps", "ConfigMap", b"nope")
                .expect_err("magic")
                .contains("magic")
        );
        let truncated = [b"k8s\0".as_slice(), &[0x12, 0x10, 1]].concat();
        assert!(
            decode("configmaps", "ConfigMap", &truncated)
                .expect_err("short")
                .contains("truncated")
        );
        assert!(
            decode("pods", "Pod", &envelope(&[]))
                .expect_err("pods")
                .contains("application/json")
        );
    }
}
