//! What an EdgeApplication makes (pure): for each Deployment manifest and each target
//! NodeGroup, a Deployment `<name>-<group>` on that group's nodes (a `nodeSelector` on the label
//! the NodeGroup controller puts on its members), owned by the EdgeApplication, with the group's
//! overriders applied: replicas, images, env, command, args, resources.

use serde_json::{Map, Value, json};

use super::image::Image;
use crate::nodegroup::BELONGING_TO;

pub const APP_LABEL: &str = "apps.kubeedge.io/edgeapplication-name";
pub const GROUP_LABEL: &str = "apps.kubeedge.io/nodegroup";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("manifest {0}: only apps/v1 Deployments can be rendered per node group, not {1:?}")]
    Unsupported(usize, String),
    #[error("manifest {0} has no metadata.name")]
    NoName(usize),
}

/// The Deployments of `app` (an EdgeApplication object), in manifest then group order.
pub fn render(app: &Value) -> Result<Vec<Value>, RenderError> {
    let manifests = app
        .pointer("/spec/workloadTemplate/manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let groups = app
        .pointer("/spec/workloadScope/targetNodeGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, m) in manifests.iter().enumerate() {
        let kind = format!("{}/{}", s(m, "/apiVersion"), s(m, "/kind"));
        if kind != "apps/v1/Deployment" {
            return Err(RenderError::Unsupported(i, kind));
        }
        if s(m, "/metadata/name").is_empty() {
            return Err(RenderError::NoName(i));
        }
        for g in &groups {
            out.push(one(app, m, s(g, "/name"), &g["overriders"]));
        }
    }
    Ok(out)
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn one(app: &Value, manifest: &Value, group: &str, over: &Value) -> Value {
    let app_name = s(app, "/metadata/name");
    let ns = match s(manifest, "/metadata/namespace") {
        "" => s(app, "/metadata/namespace"),
        n => n,
    };
    let mut d = manifest.clone();
    let meta = json!({
        "name": format!("{}-{group}", s(manifest, "/metadata/name")),
        "namespace": ns,
        "labels": manifest["metadata"]["labels"].clone(),
        "annotations": manifest["metadata"]["annotations"].clone(),
        "ownerReferences": [{
            "apiVersion": "apps.kubeedge.io/v1alpha1", "kind": "EdgeApplication",
            "name": app_name, "uid": app["metadata"]["uid"],
            "controller": true, "blockOwnerDeletion": true,
        }],
    });
    d["metadata"] = meta;
    for (k, v) in [(APP_LABEL, app_name), (GROUP_LABEL, group)] {
        if !d["metadata"]["labels"].is_object() {
            d["metadata"]["labels"] = json!({});
        }
        d["metadata"]["labels"][k] = json!(v);
    }
    if let Some(m) = d["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    let pod = &mut d["spec"]["template"]["spec"];
    if !pod["nodeSelector"].is_object() {
        pod["nodeSelector"] = json!({});
    }
    pod["nodeSelector"][BELONGING_TO] = json!(group);
    if let Some(n) = over.get("replicas").and_then(Value::as_i64) {
        d["spec"]["replicas"] = json!(n);
    }
    images(&mut d, over);
    containers(&mut d, over);
    d
}

fn list<'a>(over: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    over.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn images(d: &mut Value, over: &Value) {
    for o in list(over, "imageOverriders") {
        let (component, operator) = (s(o, "/component"), s(o, "/operator"));
        let value = s(o, "/value");
        let paths: Vec<String> = match o.pointer("/predicate/path").and_then(Value::as_str) {
            Some(p) => vec![p.to_string()],
            None => ["containers", "initContainers"]
                .iter()
                .flat_map(|l| {
                    let n = d["spec"]["template"]["spec"][*l]
                        .as_array()
                        .map_or(0, Vec::len);
                    (0..n).map(move |i| format!("/spec/template/spec/{l}/{i}/image"))
                })
                .collect(),
        };
        for p in paths {
            if let Some(slot) = d.pointer_mut(&p)
                && let Some(current) = slot.as_str()
            {
                let mut image = Image::parse(current);
                image.apply(component, operator, value);
                *slot = json!(image.to_string());
            }
        }
    }
}

/// Env, command, args and resources overriders, each for the container it names.
fn containers(d: &mut Value, over: &Value) {
    let Some(cs) = d
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in cs.iter_mut() {
        let name = s(c, "/name").to_string();
        let mine = |key: &str| -> Vec<Value> {
            list(over, key)
                .filter(|o| s(o, "/containerName") == name)
                .cloned()
                .collect()
        };
        for o in mine("envOverriders") {
            env(
                c,
                s(&o, "/operator"),
                o["value"].as_array().cloned().unwrap_or_default(),
            );
        }
        for (key, field) in [("commandOverriders", "command"), ("argsOverriders", "args")] {
            for o in mine(key) {
                strings(
                    c,
                    field,
                    s(&o, "/operator"),
                    o["value"].as_array().cloned().unwrap_or_default(),
                );
            }
        }
        for o in mine("resourcesOverriders") {
            c["resources"] = o["value"].clone();
        }
    }
}

fn env(c: &mut Value, operator: &str, values: Vec<Value>) {
    let mut current: Vec<Value> = c["env"].as_array().cloned().unwrap_or_default();
    let name_of = |v: &Value| s(v, "/name").to_string();
    for v in values {
        let pos = current.iter().position(|e| name_of(e) == name_of(&v));
        match (operator, pos) {
            ("add", None) => current.push(v),
            ("add" | "replace", Some(i)) => current[i] = v,
            ("remove", Some(i)) => {
                current.remove(i);
            }
            _ => {}
        }
    }
    c["env"] = Value::Array(current);
}

fn strings(c: &mut Value, field: &str, operator: &str, values: Vec<Value>) {
    let mut current: Vec<Value> = c[field].as_array().cloned().unwrap_or_default();
    match operator {
        "add" => current.extend(values),
        "remove" => current.retain(|x| !values.contains(x)),
        "replace" => current = values,
        _ => {}
    }
    if let Some(m) = c.as_object_mut() {
        m.insert(field.to_string(), Value::Array(current));
    }
}

/// Whether `have` already holds everything in `want` (what the API server added by defaulting
/// aside): a rendered Deployment is rewritten only when someone changed what it renders.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv)) || is_zero(wv)),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (h, w) => h == w,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The EdgeApplication's status: each rendered Deployment with `Available` once all its
/// replicas are, else `Processing`.
pub fn status(rendered: &[Value], current: &[(String, Value)]) -> Value {
    let entries: Vec<Value> = rendered
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = s(d, "/metadata/name");
            let live = current.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let available = live
                .and_then(|v| v.pointer("/status/availableReplicas"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let condition = if live.is_some() && available >= want { "Available" } else { "Processing" };
            json!({"identifier": {"ordinal": i, "group": "apps", "version": "v1", "kind": "Deployment",
                "resource": "deployments", "namespace": s(d, "/metadata/namespace"), "name": name},
                "conditions": condition})
        })
        .collect();
    let mut m = Map::new();
    m.insert("workloadStatus".into(), Value::Array(entries));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Value {
        json!({"metadata": {"name": "shop", "namespace": "default", "uid": "a1"},
            "spec": {"workloadTemplate": {"manifests": [{
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                        {"name": "web", "image": "nginx:1.25", "args": ["-v"],
                         "env": [{"name": "SITE", "value": "default"}]}]}}}}]},
              "workloadScope": {"targetNodeGroups": [
                {"name": "plant-a"},
                {"name": "plant-b", "overriders": {
                    "replicas": 3,
                    "imageOverriders": [{"component": "Tag", "operator": "replace", "value": "1.27"}],
                    "envOverriders": [{"containerName": "web", "operator": "replace",
                                       "value": [{"name": "SITE", "value": "b"}]}],
                    "argsOverriders": [{"containerName": "web", "operator": "add", "value": ["-q"]}],
                    "resourcesOverriders": [{"containerName": "web",
                        "value": {"limits": {"cpu": "250m"}}}]}}]}}})
    }

    #[test]
    fn one_deployment_per_group_with_its_overrides() {
        let ds = render(&app()).expect("renders");
        assert_eq!(ds.len(), 2);
        let (a, b) = (&ds[0], &ds[1]);
        assert_eq!(a["metadata"]["name"], "web-plant-a");
        assert_eq!(
            a["spec"]["template"]["spec"]["nodeSelector"][BELONGING_TO],
            "plant-a"
        );
        assert_eq!(
            a["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
        assert_eq!(a["metadata"]["ownerReferences"][0]["uid"], "a1");
        assert_eq!(a["metadata"]["labels"][APP_LABEL], "shop");
        assert_eq!(b["metadata"]["name"], "web-plant-b");
        assert_eq!(b["spec"]["replicas"], 3);
        let c = &b["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.27");
        assert_eq!(c["env"], json!([{"name": "SITE", "value": "b"}]));
        assert_eq!(c["args"], json!(["-v", "-q"]));
        assert_eq!(c["resources"], json!({"limits": {"cpu": "250m"}}));
    }

    #[test]
    fn other_kinds_are_refused_with_the_reason() {
        let mut a = app();
        a["spec"]["workloadTemplate"]["manifests"][0]["kind"] = json!("StatefulSet");
        assert_eq!(
            render(&a),
            Err(RenderError::Unsupported(0, "apps/v1/StatefulSet".into()))
        );
    }

    #[test]
    fn defaults_added_by_the_api_do_not_count_as_a_change() {
        let want =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c"}]}}}});
        let mut have = want.clone();
        have["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        have["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        assert!(contains(&have, &want));
        have["spec"]["replicas"] = json!(5);
        assert!(!contains(&have, &want), "a user's edit is undone");
    }
}
