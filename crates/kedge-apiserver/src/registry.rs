//! What the server serves: the built-in kinds and every established CustomResourceDefinition.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// An `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Version {
    pub name: String,
    pub schema: Option<Value>,
    pub status: bool,
    /// Serves `/scale` (autoscaling/v1 Scale over `spec.replicas`).
    pub scale: bool,
    pub columns: Vec<Column>,
}

/// Converts a stored object of `kind` to a served version (built in for the kinds kedge knows,
/// as kube-apiserver's own conversions; other CRDs use the `None` strategy).
pub type Converter = fn(kind: &str, obj: &Value, to: &str) -> Result<Value, String>;

#[derive(Debug, Clone)]
pub struct Resource {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Served versions, most preferred first.
    pub versions: Vec<Version>,
    /// A built-in kind (strategic merge patch allowed, kind-specific behaviour); else a CRD.
    pub builtin: bool,
    /// The version objects are stored in.
    pub storage: String,
    /// A real conversion between versions; `None` changes only `apiVersion`.
    pub converter: Option<Converter>,
}

impl Resource {
    /// The qualified resource name used in messages and as the storage key:
    /// `pods`, `devices.devices.kubeedge.io`.
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` as used in 422 messages.
    pub fn kind_group(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn version(&self, v: &str) -> Option<&Version> {
        self.versions.iter().find(|x| x.name == v)
    }

    pub fn api_version(&self, v: &str) -> String {
        group_version(&self.group, v)
    }
}

pub fn group_version(group: &str, v: &str) -> String {
    if group.is_empty() {
        v.to_string()
    } else {
        format!("{group}/{v}")
    }
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, then
/// non-conforming names alphabetically.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn rank(v: &str) -> (u8, u64, u64, String) {
        let parsed = v.strip_prefix('v').and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let major: u64 = digits.parse().ok()?;
            let tail = &rest[digits.len()..];
            let (level, num) = if tail.is_empty() {
                (3, 0)
            } else if let Some(n) = tail.strip_prefix("beta") {
                (2, n.parse().ok()?)
            } else if let Some(n) = tail.strip_prefix("alpha") {
                (1, n.parse().ok()?)
            } else {
                return None;
            };
            Some((level, major, num))
        });
        match parsed {
            Some((level, major, num)) => (level, major, num, String::new()),
            None => (0, 0, 0, v.to_string()),
        }
    }
    let (ra, rb) = (rank(a), rank(b));
    rb.0.cmp(&ra.0)
        .then(rb.1.cmp(&ra.1))
        .then(rb.2.cmp(&ra.2))
        .then(ra.3.cmp(&rb.3))
}

fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Resource {
    Resource {
        group: group.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: Vec::new(),
        categories: Vec::new(),
        versions: vec![Version {
            name: version.into(),
            schema: None,
            status: false,
            scale: false,
            columns: Vec::new(),
        }],
        builtin: true,
        storage: version.into(),
        converter: None,
    }
}

fn with(mut r: Resource, short: &[&str], status: bool) -> Resource {
    r.short_names = short.iter().map(|s| s.to_string()).collect();
    r.versions[0].status = status;
    r
}

fn scalable(mut r: Resource) -> Resource {
    r.versions[0].scale = true;
    r
}

/// `kubectl get all` lists the kinds in category `all`.
fn in_all(mut r: Resource) -> Resource {
    r.categories = vec!["all".into()];
    r
}

pub const CRD_KEY: &str = "customresourcedefinitions.apiextensions.k8s.io";

fn builtins() -> Vec<Resource> {
    vec![
        with(
            builtin("", "v1", "Namespace", "namespaces", false),
            &["ns"],
            true,
        ),
        with(builtin("", "v1", "Node", "nodes", false), &["no"], true),
        in_all(with(builtin("", "v1", "Pod", "pods", true), &["po"], true)),
        with(
            builtin("", "v1", "ConfigMap", "configmaps", true),
            &["cm"],
            false,
        ),
        builtin("", "v1", "Secret", "secrets", true),
        with(builtin("", "v1", "Event", "events", true), &["ev"], false),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
        in_all(scalable(with(
            builtin("apps", "v1", "Deployment", "deployments", true),
            &["deploy"],
            true,
        ))),
        in_all(scalable(with(
            builtin("apps", "v1", "ReplicaSet", "replicasets", true),
            &["rs"],
            true,
        ))),
        in_all(with(
            builtin("apps", "v1", "DaemonSet", "daemonsets", true),
            &["ds"],
            true,
        )),
        in_all(scalable(with(
            builtin("apps", "v1", "StatefulSet", "statefulsets", true),
            &["sts"],
            true,
        ))),
        in_all(with(builtin("batch", "v1", "Job", "jobs", true), &[], true)),
        with(
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
            &["crd", "crds"],
            true,
        ),
        // Read from the nodes on each request (`metrics`), never stored.
        builtin("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", false),
        builtin("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", true),
    ]
}

/// The served resources. Cheap to read; CRD changes replace entries.
pub struct Registry {
    by_key: RwLock<HashMap<String, Arc<Resource>>>,
    /// Groups whose preferred version is set rather than the highest served (kubectl uses it for
    /// commands that name no version).
    preferred: RwLock<HashMap<String, String>>,
}

impl Default for Registry {
    fn default() -> Self {
        let by_key = builtins()
            .into_iter()
            .map(|r| (r.key(), Arc::new(r)))
            .collect();
        Registry {
            by_key: RwLock::new(by_key),
            preferred: RwLock::default(),
        }
    }
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Resource>>> {
        self.by_key.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource served at `/<group>/<version>/<plural>`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        let key = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        self.read()
            .get(&key)
            .filter(|r| r.version(version).is_some())
            .cloned()
    }

    pub fn by_key(&self, key: &str) -> Option<Arc<Resource>> {
        self.read().get(key).cloned()
    }

    /// All resources, sorted by key (stable discovery documents).
    pub fn all(&self) -> Vec<Arc<Resource>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by_key(|r| r.key());
        v
    }

    /// Makes `version` the preferred version of `group`'s CRDs that serve it (set before the
    /// CRDs are applied).
    pub fn prefer(&self, group: &str, version: &str) {
        let mut p = self.preferred.write().unwrap_or_else(|p| p.into_inner());
        p.insert(group.to_string(), version.to_string());
    }

    /// The preferred version set for `group`, if any.
    pub fn preferred(&self, group: &str) -> Option<String> {
        let p = self.preferred.read().unwrap_or_else(|p| p.into_inner());
        p.get(group).cloned()
    }

    /// Serves the kind a CRD object defines (replacing an earlier definition).
    pub fn apply_crd(&self, crd: &Value) -> Result<Arc<Resource>, String> {
        let mut r = resource_from_crd(crd)?;
        let preferred = self.preferred.read().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = preferred.get(&r.group)
            && let Some(i) = r.versions.iter().position(|x| &x.name == v)
        {
            let first = r.versions.remove(i);
            r.versions.insert(0, first);
        }
        drop(preferred);
        let r = Arc::new(r);
        let mut map = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        if map.get(&r.key()).is_some_and(|old| old.builtin) {
            return Err(format!("{} is a built-in resource", r.key()));
        }
        map.insert(r.key(), r.clone());
        Ok(r)
    }

    pub fn remove_crd(&self, key: &str) {
        let mut map = self.by_key.write().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|r| !r.builtin) {
            map.remove(key);
        }
    }
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the served resource out of a CRD, checking what kube-apiserver checks first.
pub fn resource_from_crd(crd: &Value) -> Result<Resource, String> {
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    let kind = s(crd, "/spec/names/kind");
    let name = s(crd, "/metadata/name");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err("spec.group, spec.names.plural and spec.names.kind are required".into());
    }
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let scope = s(crd, "/spec/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        return Err(format!(
            "spec.scope: Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""
        ));
    }
    let mut versions: Vec<Version> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
                .map(crd_version)
                .collect()
        })
        .unwrap_or_default();
    if versions.is_empty() {
        return Err("spec.versions: Required value: must have at least one served version".into());
    }
    versions.sort_by(|a, b| version_cmp(&a.name, &b.name));
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| s(v, "/name"))
        .unwrap_or_else(|| versions[0].name.clone());
    let singular = match s(crd, "/spec/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let list_kind = match s(crd, "/spec/names/listKind") {
        x if x.is_empty() => format!("{kind}List"),
        x => x,
    };
    let converter = converter_for(&group, &kind);
    Ok(Resource {
        converter,
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strings(crd, "/spec/names/shortNames"),
        categories: strings(crd, "/spec/names/categories"),
        versions,
        builtin: false,
        storage,
    })
}

/// The conversions kedge knows: devices.kubeedge.io's Device and DeviceModel.
fn converter_for(group: &str, kind: &str) -> Option<Converter> {
    use kedge_core::devices;
    fn devices_convert(kind: &str, obj: &Value, to: &str) -> Result<Value, String> {
        devices::convert(kind, obj, to).map_err(|e| e.to_string())
    }
    (group == devices::GROUP && matches!(kind, "Device" | "DeviceModel"))
        .then_some(devices_convert as Converter)
}

fn crd_version(v: &Value) -> Version {
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| Column {
                    name: s(c, "/name"),
                    type_: s(c, "/type"),
                    json_path: s(c, "/jsonPath"),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    description: s(c, "/description"),
                })
                .collect()
        })
        .unwrap_or_default();
    Version {
        name: s(v, "/name"),
        schema: v.pointer("/schema/openAPIV3Schema").cloned(),
        status: v.pointer("/subresources/status").is_some(),
        scale: false,
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_priority() {
        let mut v = vec!["v1alpha1", "v2", "v1beta1", "v1", "v1alpha2", "foo"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["v2", "v1", "v1beta1", "v1alpha2", "v1alpha1", "foo"]);
    }

    #[test]
    fn crds_become_resources_and_bad_ones_are_explained() {
        let reg = Registry::default();
        let crd = json!({"metadata": {"name": "gizmos.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gizmos", "kind": "Gizmo", "shortNames": ["gz"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}]}});
        let r = reg.apply_crd(&crd).expect("valid");
        assert_eq!(
            (r.key().as_str(), r.list_kind.as_str()),
            ("gizmos.example.com", "GizmoList")
        );
        assert!(reg.lookup("example.com", "v1", "gizmos").is_some());
        assert!(reg.lookup("example.com", "v2", "gizmos").is_none());
        reg.remove_crd("gizmos.example.com");
        assert!(reg.lookup("example.com", "v1", "gizmos").is_none());
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("wrong");
        assert!(
            resource_from_crd(&bad)
                .expect_err("bad")
                .contains("metadata.name")
        );
        assert!(reg.lookup("", "v1", "pods").is_some_and(|r| r.builtin));
    }
}
