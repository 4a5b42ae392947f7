//! The PATCH content types: JSON merge patch (RFC 7386), JSON patch (RFC 6902), Kubernetes
//! strategic merge patch for the built-in kinds, and server-side apply (approximated as a merge).

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    /// `application/apply-patch+yaml`: kedge does not track field managers, so an apply is a
    /// merge of the applied configuration into the object.
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the body of the request was in an unknown format: {0}")]
    Decode(String),
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatch(String),
}

/// Applies `patch` (already decoded) to `target`.
pub fn apply(kind: PatchKind, target: &mut Value, patch: Value) -> Result<(), PatchError> {
    match kind {
        PatchKind::Merge | PatchKind::Apply => {
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
            json_patch::patch(target, &ops).map_err(|e| PatchError::JsonPatch(e.to_string()))
        }
        PatchKind::Strategic => {
            strategic_merge(target, patch);
            Ok(())
        }
    }
}

/// How a list field of the built-in kinds merges under a strategic merge patch. Keyed by field
/// name: within the kinds kedge serves (core Pod/Node/ConfigMap/Secret/Namespace/Event, Lease)
/// each of these names has one meaning.
enum ListStrategy {
    MergeByKey(&'static str),
    MergePrimitives,
    Replace,
}

fn list_strategy(field: &str) -> ListStrategy {
    use ListStrategy::*;
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => MergeByKey("name"),
        "ports" => MergeByKey("containerPort"),
        "volumeMounts" => MergeByKey("mountPath"),
        "volumeDevices" => MergeByKey("devicePath"),
        "conditions" | "addresses" => MergeByKey("type"),
        "ownerReferences" => MergeByKey("uid"),
        "hostAliases" => MergeByKey("ip"),
        "topologySpreadConstraints" => MergeByKey("topologyKey"),
        "finalizers" => MergePrimitives,
        _ => Replace,
    }
}

const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

fn strategic_merge(target: &mut Value, patch: Value) {
    let Value::Object(mut patch) = patch else {
        *target = patch;
        return;
    };
    match patch.remove("$patch").as_ref().and_then(Value::as_str) {
        Some("replace") => {
            strip_directives(&mut patch);
            *target = Value::Object(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(obj) = target.as_object_mut() else {
        return;
    };
    patch.remove("$retainKeys");
    for (key, pv) in patch {
        if key.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            remove_primitives(obj, field, &pv);
            continue;
        }
        merge_field(obj, key, pv);
    }
}

fn merge_field(obj: &mut Map<String, Value>, key: String, pv: Value) {
    match pv {
        Value::Null => {
            obj.remove(&key);
        }
        Value::Object(ref m) if m.get("$patch").and_then(Value::as_str) == Some("delete") => {
            obj.remove(&key);
        }
        Value::Object(_) => strategic_merge(obj.entry(key).or_insert(Value::Null), pv),
        Value::Array(items) => {
            let merged = match (list_strategy(&key), obj.remove(&key)) {
                (ListStrategy::MergeByKey(mk), Some(Value::Array(orig))) => {
                    merge_keyed(orig, items, mk)
                }
                (ListStrategy::MergePrimitives, Some(Value::Array(mut orig))) => {
                    for item in items {
                        if !orig.contains(&item) {
                            orig.push(item);
                        }
                    }
                    orig
                }
                _ => strip_list(items),
            };
            obj.insert(key, Value::Array(merged));
        }
        scalar => {
            obj.insert(key, scalar);
        }
    }
}

fn merge_keyed(mut orig: Vec<Value>, items: Vec<Value>, mk: &str) -> Vec<Value> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return strip_list(
            items
                .into_iter()
                .filter(|i| i.get("$patch").is_none())
                .collect(),
        );
    }
    for item in items {
        let key = item.get(mk).cloned();
        let pos = key
            .as_ref()
            .and_then(|k| orig.iter().position(|o| o.get(mk) == Some(k)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                orig.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut orig[i], item),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item);
                orig.push(fresh);
            }
        }
    }
    orig
}

fn remove_primitives(obj: &mut Map<String, Value>, field: &str, values: &Value) {
    if let (Some(Value::Array(list)), Value::Array(drop)) = (obj.get_mut(field), values) {
        list.retain(|v| !drop.contains(v));
    }
}

fn strip_list(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|mut v| {
            if let Value::Object(m) = &mut v {
                strip_directives(m);
            }
            v
        })
        .collect()
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        match v {
            Value::Object(inner) => strip_directives(inner),
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(inner) = item {
                        strip_directives(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(mut target: Value, patch: Value) -> Value {
        apply(PatchKind::Strategic, &mut target, patch).expect("patch");
        target
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let out = smp(
            pod,
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}, {"name": "c", "image": "w"}])
        );
    }

    #[test]
    fn strategic_delete_directives() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Gone"}]}});
        let out = smp(
            obj,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}},
                "status": {"conditions": [{"type": "Gone", "$patch": "delete"}]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
    }

    #[test]
    fn strategic_unkeyed_lists_and_maps_replace() {
        let obj = json!({"data": {"a": "1"}, "spec": {"args": ["1", "2"]}});
        let out = smp(
            obj,
            json!({"data": {"$patch": "replace", "b": "2"}, "spec": {"args": ["3"]}}),
        );
        assert_eq!(out, json!({"data": {"b": "2"}, "spec": {"args": ["3"]}}));
    }

    #[test]
    fn merge_and_json_patch() {
        let mut v = json!({"a": {"b": 1, "c": 2}});
        apply(PatchKind::Merge, &mut v, json!({"a": {"b": null, "d": 3}})).expect("merge");
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}}));
        apply(
            PatchKind::Json,
            &mut v,
            json!([{"op": "replace", "path": "/a/c", "value": 5}]),
        )
        .expect("json patch");
        assert_eq!(v["a"]["c"], 5);
        let bad = apply(
            PatchKind::Json,
            &mut v,
            json!([{"op": "remove", "path": "/nope"}]),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
