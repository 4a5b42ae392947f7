//! One request to a resource (`Call`), the selectors of a list or watch (`Filter`), and how a
//! stored object is served at the version asked for. Shared by `handlers` and `watch`.

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::Resource;
use crate::request::{Query, ResourcePath};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::Stored;
use crate::table;

pub struct Call {
    pub method: Method,
    pub path: ResourcePath,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }

    pub fn table_include(&self) -> Option<String> {
        table::wants_table(self.header("accept")).then(|| {
            self.query
                .get("includeObject")
                .unwrap_or("Metadata")
                .to_string()
        })
    }
}

/// The stored object as served at `version`: converted by the kind's converter, or (the `None`
/// strategy) with only `apiVersion` changed.
pub fn served_json(res: &Resource, version: &str, obj: &Stored) -> Bytes {
    if res.versions.len() == 1 {
        return obj.json.clone();
    }
    let v = served_value(res, version, obj);
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

pub fn served_value(res: &Resource, version: &str, obj: &Stored) -> Value {
    let v = obj.value();
    if res.versions.len() == 1 {
        return v;
    }
    at_version(res, version, v).unwrap_or_else(|e| {
        tracing::warn!(object = %obj.name, error = %e, "stored object not converted");
        json!({})
    })
}

/// `obj` (in the version its `apiVersion` names) at `version`.
pub fn at_version(res: &Resource, version: &str, mut obj: Value) -> Result<Value, ApiError> {
    let want = res.api_version(version);
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return Ok(obj);
    }
    match res.converter {
        Some(convert) => convert(&res.kind, &obj, version)
            .map_err(|e| ApiError::internal(format!("conversion of {} to {want}: {e}", res.kind))),
        None => {
            obj["apiVersion"] = json!(want);
            Ok(obj)
        }
    }
}

/// `obj` in the version the resource stores.
pub fn to_storage(res: &Resource, obj: Value) -> Result<Value, ApiError> {
    at_version(res, &res.storage, obj)
}

/// Selectors of a list or watch.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_query(q: &Query) -> Result<Filter, ApiError> {
        let bad = |e: crate::selectors::SelectorError| ApiError::bad_request(e.to_string());
        Ok(Filter {
            labels: LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(bad)?,
            fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(bad)?,
        })
    }

    pub fn matches(&self, obj: &Stored) -> bool {
        if !self.labels.matches(&obj.labels) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        if self.fields.only_metadata() {
            return self.fields.matches_meta(&obj.namespace, &obj.name);
        }
        self.fields.matches(&obj.value())
    }
}
