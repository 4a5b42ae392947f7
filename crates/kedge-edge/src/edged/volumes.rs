//! Pod volumes, materialised under the edge's data directory
//! (`<data>/pods/<uid>/volumes/<name>`): configMap and secret volumes as files (rewritten when
//! the object changes), emptyDir as a directory, hostPath as the host's path, and projected
//! volumes (the `kube-api-access-*` one kube-apiserver adds to every pod, say) as the files of
//! their configMap, secret and downwardAPI sources. A serviceAccountToken source is written
//! when the edge holds a token for the account (a `serviceaccounttoken` object); otherwise its
//! file is left out and the pod runs without it — the edge mints no tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, ProjectedVolumeSource, Volume};

use super::env::{ConfigError, Lookup, PodFields, data_of, field};

/// What a volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A directory of files written from a ConfigMap or Secret: relative path → bytes.
    Files(BTreeMap<String, Vec<u8>>),
    Empty,
    Host {
        path: PathBuf,
        create: HostCreate,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCreate {
    Nothing,
    Directory,
    File,
}

fn projected(
    data: BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    kind: &'static str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, ConfigError> {
    let Some(items) = items else {
        return Ok(data);
    };
    items
        .iter()
        .map(|i| match data.get(&i.key) {
            Some(v) => Ok((i.path.clone(), v.clone())),
            None => Err(ConfigError::MissingKey {
                kind,
                name: name.into(),
                key: i.key.clone(),
            }),
        })
        .collect()
}

fn files(
    lookup: Lookup,
    kind: &'static str,
    name: &str,
    items: &Option<Vec<KeyToPath>>,
    optional: bool,
) -> Result<Plan, ConfigError> {
    match lookup(kind, name) {
        Some(obj) => Ok(Plan::Files(projected(
            data_of(kind, &obj),
            items,
            kind,
            name,
        )?)),
        None if optional => Ok(Plan::Files(BTreeMap::new())),
        None => Err(ConfigError::Missing {
            kind,
            name: name.into(),
        }),
    }
}

/// The files of a projected volume, from each of its sources in turn.
fn projection(
    p: &ProjectedVolumeSource,
    pod: &PodFields,
    lookup: Lookup,
) -> Result<Plan, ConfigError> {
    let mut out = BTreeMap::new();
    for s in p.sources.iter().flatten() {
        let part = if let Some(c) = &s.config_map {
            let optional = c.optional == Some(true);
            files(lookup, "configmap", &c.name, &c.items, optional)?
        } else if let Some(c) = &s.secret {
            files(
                lookup,
                "secret",
                &c.name,
                &c.items,
                c.optional == Some(true),
            )?
        } else if let Some(d) = &s.downward_api {
            let mut f = BTreeMap::new();
            for item in d.items.iter().flatten() {
                let Some(r) = &item.field_ref else {
                    return Err(ConfigError::Unsupported(format!(
                        "downwardAPI {}: only fieldRef is supported",
                        item.path
                    )));
                };
                f.insert(
                    item.path.clone(),
                    metadata(pod, &r.field_path)?.into_bytes(),
                );
            }
            Plan::Files(f)
        } else if let Some(t) = &s.service_account_token {
            let account = pod
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let token = lookup("serviceaccounttoken", &account)
                .and_then(|v| v.pointer("/status/token")?.as_str().map(String::from));
            Plan::Files(
                token
                    .map(|tk| (t.path.clone(), tk.into_bytes()))
                    .into_iter()
                    .collect(),
            )
        } else {
            continue;
        };
        if let Plan::Files(f) = part {
            out.extend(f);
        }
    }
    Ok(Plan::Files(out))
}

/// A downwardAPI volume's field: the pod's own, or all its labels or annotations as
/// `key="value"` lines, as kubelet writes them.
fn metadata(pod: &PodFields, path: &str) -> Result<String, ConfigError> {
    let meta = &pod.pod.metadata;
    let all = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    match path {
        "metadata.labels" => Ok(all(&meta.labels)),
        "metadata.annotations" => Ok(all(&meta.annotations)),
        p => field(pod, p),
    }
}

/// What `v` is to be on the host.
pub fn plan(v: &Volume, pod: &PodFields, lookup: Lookup) -> Result<Plan, ConfigError> {
    if let Some(p) = &v.projected {
        return projection(p, pod, lookup);
    }
    if let Some(c) = &v.config_map {
        return files(
            lookup,
            "configmap",
            &c.name,
            &c.items,
            c.optional == Some(true),
        );
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or("");
        return files(lookup, "secret", name, &s.items, s.optional == Some(true));
    }
    if v.empty_dir.is_some() {
        return Ok(Plan::Empty);
    }
    if let Some(h) = &v.host_path {
        let create = match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => HostCreate::Directory,
            "FileOrCreate" => HostCreate::File,
            _ => HostCreate::Nothing,
        };
        return Ok(Plan::Host {
            path: PathBuf::from(&h.path),
            create,
        });
    }
    Err(ConfigError::Unsupported(format!(
        "volume {}: only configMap, secret, projected, emptyDir and hostPath volumes are supported",
        v.name
    )))
}

/// A relative path that stays inside its directory.
fn safe(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Makes the volume exist on the host; its host path. Files are replaced atomically and only
/// when their content changed; files no longer in the object are removed.
pub fn materialise(dir: &Path, plan: &Plan) -> std::io::Result<PathBuf> {
    match plan {
        Plan::Host { path, create } => {
            match create {
                HostCreate::Directory => std::fs::create_dir_all(path)?,
                HostCreate::File if !path.exists() => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::File::create(path)?;
                }
                _ => {}
            }
            Ok(path.clone())
        }
        Plan::Empty => {
            std::fs::create_dir_all(dir)?;
            Ok(dir.to_path_buf())
        }
        Plan::Files(files) => {
            std::fs::create_dir_all(dir)?;
            for (rel, bytes) in files.iter().filter(|(rel, _)| safe(rel)) {
                let path = dir.join(rel);
                if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
                    continue;
                }
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let tmp = path.with_extension("kedge-tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)?;
            }
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_file() && !files.contains_key(&name) {
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(dir.to_path_buf())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn objects(kind: &str, name: &str) -> Option<Value> {
        match (kind, name) {
            ("configmap", "cfg") => Some(json!({"data": {"a.conf": "A", "b.conf": "B"}})),
            ("configmap", "kube-root-ca.crt") => Some(json!({"data": {"ca.crt": "CA"}})),
            _ => None,
        }
    }

    fn pod() -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns1",
            "labels": {"app": "x", "tier": "edge"}}, "spec": {"containers": []}}))
        .expect("pod")
    }

    fn fields(pod: &k8s_openapi::api::core::v1::Pod) -> PodFields<'_> {
        PodFields {
            pod,
            node: "n1",
            pod_ip: "",
            host_ip: "",
        }
    }

    /// The volume kube-apiserver's ServiceAccount admission adds to every pod.
    fn kube_api_access() -> Volume {
        volume(
            json!({"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
                                       {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}),
        )
    }

    #[test]
    fn projected_volumes_gather_their_sources_and_a_token_only_when_the_edge_has_one() {
        let pod = pod();
        let p = plan(&kube_api_access(), &fields(&pod), &objects).expect("plan");
        let files = |pairs: &[(&str, &str)]| {
            Plan::Files(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let labels = "app=\"x\"\ntier=\"edge\"\n";
        assert_eq!(
            p,
            files(&[("ca.crt", "CA"), ("labels", labels), ("namespace", "ns1")])
        );
        let with_token = |kind: &str, name: &str| match (kind, name) {
            ("serviceaccounttoken", "default") => Some(json!({"status": {"token": "T"}})),
            _ => objects(kind, name),
        };
        let p = plan(&kube_api_access(), &fields(&pod), &with_token).expect("plan");
        assert_eq!(
            p,
            files(&[
                ("ca.crt", "CA"),
                ("labels", labels),
                ("namespace", "ns1"),
                ("token", "T")
            ])
        );
        let no_ca =
            |kind: &str, name: &str| (kind == "none").then(|| objects(kind, name)).flatten();
        assert!(
            plan(&kube_api_access(), &fields(&pod), &no_ca).is_err(),
            "the CA is required"
        );
    }

    fn volume(v: Value) -> Volume {
        serde_json::from_value(v).expect("volume")
    }

    #[test]
    fn configmap_volumes_become_files_and_follow_their_object() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = volume(json!({"name": "conf", "configMap": {"name": "cfg"}}));
        let p = plan(&v, &fields(&pod()), &objects).expect("plan");
        let at = materialise(&dir.path().join("conf"), &p).expect("written");
        assert_eq!(std::fs::read_to_string(at.join("a.conf")).expect("a"), "A");
        let v = volume(
            json!({"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "b.conf", "path": "only.conf"}]}}),
        );
        let p = plan(&v, &fields(&pod()), &objects).expect("plan");
        materialise(&at, &p).expect("rewritten");
        assert_eq!(
            std::fs::read_to_string(at.join("only.conf")).expect("b"),
            "B"
        );
        assert!(
            !at.join("a.conf").exists(),
            "a key no longer projected is removed"
        );
    }

    #[test]
    fn unknown_objects_and_volume_kinds_are_errors_unless_optional() {
        let v = volume(json!({"name": "x", "configMap": {"name": "nope"}}));
        assert!(plan(&v, &fields(&pod()), &objects).is_err());
        let v = volume(json!({"name": "x", "configMap": {"name": "nope", "optional": true}}));
        assert_eq!(
            plan(&v, &fields(&pod()), &objects).expect("optional"),
            Plan::Files(BTreeMap::new())
        );
        let v = volume(json!({"name": "x", "nfs": {"server": "s", "path": "/"}}));
        assert!(
            plan(&v, &fields(&pod()), &objects)
                .expect_err("nfs")
                .to_string()
                .contains("only configMap")
        );
        assert!(!safe("../escape") && !safe("/abs") && safe("sub/file"));
    }
}
