//! Pod volumes, materialised under the edge's data directory
//! (`<data>/pods/<uid>/volumes/<name>`): configMap and secret volumes as files (rewritten when
//! the object changes), emptyDir as a directory, hostPath as the host's path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::env::{ConfigError, Lookup, data_of};

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

/// What `v` is to be on the host.
pub fn plan(v: &Volume, lookup: Lookup) -> Result<Plan, ConfigError> {
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
        "volume {}: only configMap, secret, emptyDir and hostPath volumes are supported",
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
        (kind == "configmap" && name == "cfg")
            .then(|| json!({"data": {"a.conf": "A", "b.conf": "B"}}))
    }

    fn volume(v: Value) -> Volume {
        serde_json::from_value(v).expect("volume")
    }

    #[test]
    fn configmap_volumes_become_files_and_follow_their_object() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = volume(json!({"name": "conf", "configMap": {"name": "cfg"}}));
        let p = plan(&v, &objects).expect("plan");
        let at = materialise(&dir.path().join("conf"), &p).expect("written");
        assert_eq!(std::fs::read_to_string(at.join("a.conf")).expect("a"), "A");
        let v = volume(
            json!({"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "b.conf", "path": "only.conf"}]}}),
        );
        let p = plan(&v, &objects).expect("plan");
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
        assert!(plan(&v, &objects).is_err());
        let v = volume(json!({"name": "x", "configMap": {"name": "nope", "optional": true}}));
        assert_eq!(
            plan(&v, &objects).expect("optional"),
            Plan::Files(BTreeMap::new())
        );
        let v = volume(json!({"name": "x", "nfs": {"server": "s", "path": "/"}}));
        assert!(
            plan(&v, &objects)
                .expect_err("nfs")
                .to_string()
                .contains("only configMap")
        );
        assert!(!safe("../escape") && !safe("/abs") && safe("sub/file"));
    }
}
