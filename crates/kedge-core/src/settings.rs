//! What kedge's configuration types share: printing every setting with its comment
//! (`--print-default-config`), laying the flags given over a file's settings, and settings that
//! must never be printed.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Parse { path: PathBuf, cause: String },
    #[error("flags: {0}")]
    Flags(String),
}

/// A settings type: read from a YAML file (its keys camelCase, unknown ones refused by the
/// type), with the flags given on the command line laid over it.
pub trait Layered: Serialize + DeserializeOwned {
    /// The settings in `text` (YAML; `path` names it in errors).
    fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        serde_saphyr::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.into(),
            cause: e.to_string(),
        })
    }

    /// The settings in the file at `path` (the one place this crate reads a file).
    fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|cause| SettingsError::Read {
            path: path.into(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// `flags` (the settings given on the command line, by their YAML names; absent ones left
    /// out or null) laid over `self`.
    fn overlay(self, flags: serde_json::Value) -> Result<Self, SettingsError> {
        overlay(&self, flags).map_err(SettingsError::Flags)
    }
}

/// `value`'s fields as YAML, each under its comment (JSON scalars and lists are YAML too).
pub fn commented_yaml<T: Serialize>(title: &str, value: &T, docs: &[(&str, &str)]) -> String {
    let v = serde_json::to_value(value).unwrap_or_default();
    let mut out = format!("# {title}\n");
    for (key, doc) in docs {
        for line in doc.lines().filter(|l| !l.is_empty()) {
            out.push_str(&format!("# {}\n", line.trim()));
        }
        let text = v.get(*key).map(|x| x.to_string()).unwrap_or_default();
        out.push_str(&format!("{key}: {text}\n"));
    }
    out
}

/// A setting that must never be printed (a token, a URL with a password): serialised as it is,
/// shown as `<redacted>` by `{:?}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// `base` with the keys of `over` (an object; nulls are left out) laid over it.
pub fn overlay<T>(base: &T, over: serde_json::Value) -> Result<T, String>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let mut v = serde_json::to_value(base).map_err(|e| e.to_string())?;
    if let (Some(into), serde_json::Value::Object(from)) = (v.as_object_mut(), over) {
        into.extend(from.into_iter().filter(|(_, x)| !x.is_null()));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct S {
        port: u16,
        names: Vec<String>,
        token: Secret,
    }

    #[test]
    fn printed_settings_read_back_and_flags_win() {
        let s = S {
            port: 1,
            names: vec!["a b".into()],
            token: Secret("t0ken".into()),
        };
        let text = commented_yaml(
            "title",
            &s,
            &[
                ("port", "The port.\nTwo lines."),
                ("names", ""),
                ("token", ""),
            ],
        );
        assert!(
            text.starts_with("# title\n# The port.\n# Two lines.\nport: 1\n"),
            "{text}"
        );
        let back: S = serde_saphyr::from_str(&text).expect("YAML");
        assert_eq!(back, s);
        let over = overlay(&s, json!({"port": 2, "names": null})).expect("overlay");
        assert_eq!((over.port, over.names), (2, vec!["a b".to_string()]));
        assert!(!format!("{s:?}").contains("t0ken"));
    }
}
