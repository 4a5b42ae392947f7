//! A container's environment, as kubelet builds it: `envFrom` (ConfigMaps and Secrets, with a
//! prefix), then `env` (values, `$(VAR)` references to earlier variables, ConfigMap and Secret
//! keys, pod fields). Pure: objects come through a lookup.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use serde_json::Value;

/// Finds a ConfigMap (`"configmap"`) or Secret (`"secret"`) of the pod's namespace by name.
pub type Lookup<'a> = &'a dyn Fn(&str, &str) -> Option<Value>;

/// Why a container cannot be configured (kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{kind} \"{name}\" not found")]
    Missing { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {name}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// The pod fields `fieldRef` can name, known when the container is created.
pub struct PodFields<'a> {
    pub pod: &'a Pod,
    pub node: &'a str,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

/// A ConfigMap's or Secret's keys and their bytes (ConfigMap `data`/`binaryData`, Secret
/// `data` (base64)/`stringData`).
pub fn data_of(kind: &str, obj: &Value) -> BTreeMap<String, Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (plain, encoded) = if kind == "secret" {
        ("stringData", "data")
    } else {
        ("data", "binaryData")
    };
    let mut out = BTreeMap::new();
    let entries = |field: &str| {
        obj.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<Vec<_>>()
    };
    for (k, v) in entries(encoded) {
        if let Ok(bytes) = b64.decode(v.as_bytes()) {
            out.insert(k, bytes);
        }
    }
    for (k, v) in entries(plain) {
        out.insert(k, v.into_bytes());
    }
    out
}

fn kind_name(kind: &str) -> &'static str {
    if kind == "secret" {
        "secret"
    } else {
        "configmap"
    }
}

/// The keys of `name`, or None for an optional one that is missing.
fn object_data(
    lookup: Lookup,
    kind: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
    match lookup(kind, name) {
        Some(obj) => Ok(Some(data_of(kind, &obj))),
        None if optional => Ok(None),
        None => Err(ConfigError::Missing {
            kind: kind_name(kind),
            name: name.into(),
        }),
    }
}

fn key_value(
    lookup: Lookup,
    kind: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(data) = object_data(lookup, kind, name, optional)? else {
        return Ok(None);
    };
    match data.get(key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(ConfigError::MissingKey {
            kind: kind_name(kind),
            name: name.into(),
            key: key.into(),
        }),
    }
}

pub(super) fn field(f: &PodFields, path: &str) -> Result<String, ConfigError> {
    let meta = &f.pod.metadata;
    let spec = f.pod.spec.as_ref();
    let label_or_annotation = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => f.node.into(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => f.pod_ip.into(),
        "status.hostIP" => f.host_ip.into(),
        p => {
            let key = |prefix: &str| {
                p.strip_prefix(prefix)
                    .and_then(|k| k.strip_suffix("']"))
                    .map(String::from)
            };
            if let Some(k) = key("metadata.labels['") {
                label_or_annotation(&meta.labels, &k)
            } else if let Some(k) = key("metadata.annotations['") {
                label_or_annotation(&meta.annotations, &k)
            } else {
                return Err(ConfigError::Unsupported(format!(
                    "fieldRef {p} is not supported"
                )));
            }
        }
    })
}

fn env_var(
    v: &EnvVar,
    f: &PodFields,
    lookup: Lookup,
    vars: &BTreeMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &v.value_from else {
        return Ok(Some(expand(v.value.as_deref().unwrap_or(""), vars)));
    };
    if let Some(r) = &from.config_map_key_ref {
        return key_value(
            lookup,
            "configmap",
            &r.name,
            &r.key,
            r.optional == Some(true),
        );
    }
    if let Some(r) = &from.secret_key_ref {
        return key_value(lookup, "secret", &r.name, &r.key, r.optional == Some(true));
    }
    if let Some(r) = &from.field_ref {
        return field(f, &r.field_path).map(Some);
    }
    Err(ConfigError::Unsupported(format!(
        "env {}: only value, configMapKeyRef, secretKeyRef and fieldRef are supported",
        v.name
    )))
}

/// The container's environment, in the order kubelet builds it (later names win).
pub fn resolve(
    c: &Container,
    f: &PodFields,
    lookup: Lookup,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = BTreeMap::new();
    let mut order = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for src in c.env_from.iter().flatten() {
        let prefix = src.prefix.as_deref().unwrap_or("");
        let data = if let Some(r) = &src.config_map_ref {
            object_data(lookup, "configmap", &r.name, r.optional == Some(true))?
        } else if let Some(r) = &src.secret_ref {
            object_data(lookup, "secret", &r.name, r.optional == Some(true))?
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            set(
                &mut vars,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for v in c.env.iter().flatten() {
        if let Some(value) = env_var(v, f, lookup, &vars)? {
            set(&mut vars, v.name.clone(), value);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.get(&k).cloned().unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`,
/// anything else is left as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some(v) = vars.get(&body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects(kind: &str, name: &str) -> Option<Value> {
        match (kind, name) {
            ("configmap", "cfg") => Some(json!({"data": {"MODE": "fast", "LEVEL": "3"}})),
            ("secret", "creds") => Some(json!({"data": {"PASSWORD": "czNjcjN0"}})),
            _ => None,
        }
    }

    fn container(v: Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    fn pod() -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns", "labels": {"app": "a"}}}),
        )
        .expect("pod")
    }

    #[test]
    fn env_from_objects_values_and_fields() {
        let p = pod();
        let f = PodFields {
            pod: &p,
            node: "n1",
            pod_ip: "10.0.0.2",
            host_ip: "10.0.0.1",
        };
        let c = container(
            json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "APP_"}],
            "env": [
                {"name": "GREETING", "value": "hi $(APP_MODE) $$(APP_MODE) $(NOPE)"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            ]}),
        );
        let env = resolve(&c, &f, &objects).expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("APP_MODE"), Some("fast"));
        assert_eq!(get("GREETING"), Some("hi fast $(APP_MODE) $(NOPE)"));
        assert_eq!(get("PW"), Some("s3cr3t"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("APP"), Some("a"));
        assert_eq!(get("OPT"), None);
    }

    #[test]
    fn missing_objects_and_keys_are_config_errors() {
        let p = pod();
        let f = PodFields {
            pod: &p,
            node: "n1",
            pod_ip: "",
            host_ip: "",
        };
        let c = container(json!({"name": "c", "envFrom": [{"secretRef": {"name": "nope"}}]}));
        assert_eq!(
            resolve(&c, &f, &objects).expect_err("missing").to_string(),
            "secret \"nope\" not found"
        );
        let c = container(
            json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey"}}}]}),
        );
        assert_eq!(
            resolve(&c, &f, &objects)
                .expect_err("missing key")
                .to_string(),
            "couldn't find key nokey in configmap cfg"
        );
    }
}
