//! Discovery (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`), `/version`, and the OpenAPI v3
//! documents kubectl reads before create/apply. Legacy (unaggregated) discovery only: kubectl
//! falls back to it when the server answers plain `application/json`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::registry::{Registry, Resource, group_version, version_cmp};

pub const KUBE_VERSION: (&str, &str) = ("1", "36");

pub fn version() -> Value {
    json!({
        "major": KUBE_VERSION.0, "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0-kedge.{}", KUBE_VERSION.0, KUBE_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

/// Group name → served versions, most preferred first.
fn groups(reg: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in reg.all().iter().filter(|r| !r.group.is_empty()) {
        let vs = out.entry(r.group.clone()).or_default();
        for v in &r.versions {
            if !vs.contains(&v.name) {
                vs.push(v.name.clone());
            }
        }
    }
    for (group, vs) in out.iter_mut() {
        vs.sort_by(|a, b| version_cmp(a, b));
        if let Some(p) = reg.preferred(group)
            && let Some(i) = vs.iter().position(|v| *v == p)
        {
            let first = vs.remove(i);
            vs.insert(0, first);
        }
    }
    out
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs,
           "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub fn group_list(reg: &Registry) -> Value {
    let gs: Vec<Value> = groups(reg)
        .iter()
        .map(|(n, vs)| {
            let mut g = group_doc(n, vs);
            if let Some(m) = g.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    groups(reg).get(name).map(|vs| group_doc(name, vs))
}

fn served_at<'a>(
    reg: &'a Registry,
    group: &str,
    version: &str,
) -> impl Iterator<Item = std::sync::Arc<Resource>> + 'a {
    let (g, v) = (group.to_string(), version.to_string());
    reg.all()
        .into_iter()
        .filter(move |r| r.group == g && r.version(&v).is_some())
}

const VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn verbs(r: &crate::registry::Resource) -> &'static [&'static str] {
    if r.group == crate::metrics::GROUP {
        &["get", "list"]
    } else {
        &VERBS
    }
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in served_at(reg, group, version) {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs(&r), "shortNames": r.short_names,
            "categories": r.categories,
        }));
        if r.version(version).is_some_and(|v| v.status) {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.version(version).is_some_and(|v| v.scale) {
            resources.push(
                json!({"name": format!("{}/scale", r.plural), "singularName": "",
                "namespaced": r.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version(group, version), "resources": resources}))
}

/// OpenAPI path prefix of a group-version: `api/v1`, `apis/<g>/<v>`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 index. `hash` changes whenever the served resources change, so kubectl's
/// cache is invalidated when a CRD is added.
pub fn openapi_index(reg: &Registry, hash: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (g, vs) in groups(reg) {
        gvs.extend(vs.into_iter().map(|v| (g.clone(), v)));
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// Schema name as kube-apiserver spells it: `io.k8s.api.core.v1.Pod`,
/// `io.kubeedge.devices.v1alpha2.Device`.
fn schema_name(r: &Resource, version: &str) -> String {
    if r.builtin {
        let g = if r.group.is_empty() {
            "core"
        } else {
            r.group.split('.').next().unwrap_or("")
        };
        return format!("io.k8s.api.{g}.{version}.{}", r.kind);
    }
    let rev: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{version}.{}", rev.join("."), r.kind)
}

fn operation(r: &Resource, version: &str, action: &str) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": version, "kind": r.kind},
        "parameters": [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
             "description": "Ignore, Warn or Strict: what the server does with unknown or duplicate fields."},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ],
        "responses": {"200": {"description": "OK"}},
    })
}

/// The OpenAPI v3 document of one group-version. Built-in kinds are listed by path only: with
/// no schema for them kubectl computes strategic merge patches from its compiled-in types,
/// which carry the right list merge keys.
pub fn openapi_gv(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    let mut any = false;
    for r in served_at(reg, group, version) {
        any = true;
        let base = format!("/{}", gv_path(group, version));
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            coll.clone(),
            json!({"get": operation(&r, version, "list"), "post": operation(&r, version, "post")}),
        );
        paths.insert(
            format!("{coll}/{{name}}"),
            json!({"get": operation(&r, version, "get"), "put": operation(&r, version, "put"),
                   "patch": operation(&r, version, "patch"), "delete": operation(&r, version, "delete")}),
        );
        if let Some(schema) = r.version(version).and_then(|v| v.schema.clone()) {
            let mut s = schema;
            s["properties"]["metadata"] = json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": r.group, "version": version, "kind": r.kind}]);
            schemas.insert(schema_name(&r, version), s);
        }
    }
    any.then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.36.0"},
               "paths": paths, "components": {"schemas": schemas}})
    })
}

/// An empty OpenAPI v2 document. kubectl asks for v2 only for kinds the v3 documents do not
/// describe (an unknown kind, or strategic-merge metadata); finding nothing there it uses its
/// compiled-in types or reports the unknown kind itself, as against a real server.
pub fn openapi_v2(protobuf: bool) -> (&'static str, Vec<u8>) {
    if !protobuf {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.36.0"}, "paths": {}});
        return (
            "application/json",
            serde_json::to_vec(&doc).unwrap_or_default(),
        );
    }
    // gnostic openapi_v2.Document { swagger = 1; info = 2 { title = 1; version = 2 } }
    let (title, version) = (b"Kubernetes", b"v1.36.0");
    let mut info = vec![0x0a, title.len() as u8];
    info.extend_from_slice(title);
    info.extend_from_slice(&[0x12, version.len() as u8]);
    info.extend_from_slice(version);
    let mut doc = vec![0x0a, 3];
    doc.extend_from_slice(b"2.0");
    doc.extend_from_slice(&[0x12, info.len() as u8]);
    doc.extend_from_slice(&info);
    (
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        doc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_group_discovery() {
        let reg = Registry::default();
        let core = resource_list(&reg, "", "v1").expect("core");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"pods") && names.contains(&"pods/status"),
            "{names:?}"
        );
        assert!(!names.contains(&"leases"));
        let gl = group_list(&reg);
        assert!(
            gl["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .any(|g| g["name"] == "coordination.k8s.io")
        );
        assert!(resource_list(&reg, "nope", "v1").is_none());
    }

    #[test]
    fn openapi_documents_name_the_post_and_patch_operations() {
        let reg = Registry::default();
        let doc = openapi_gv(&reg, "", "v1").expect("core doc");
        let post = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
        assert_eq!(post["x-kubernetes-action"], "post");
        assert_eq!(post["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert_eq!(post["parameters"][0]["name"], "fieldValidation");
        let index = openapi_index(&reg, "h");
        assert!(
            index["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .is_some_and(|u| u.ends_with("hash=h"))
        );
    }
}
