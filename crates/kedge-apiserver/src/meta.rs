//! What the server does to an object on create and update: type and name checks, schema
//! validation, system metadata (uid, timestamps, generation), per-kind defaults, and the status
//! subresource split.

use kedge_core::names::{is_dns_label, is_dns_subdomain};
use serde_json::{Map, Value, json};

use crate::defaults;
use crate::error::ApiError;
use crate::registry::{CRD_KEY, Resource, resource_from_crd};
use crate::schema::{self, Cause};
use crate::store::Change;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<FieldValidation, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// Where a request addresses an object.
pub struct Target<'a> {
    pub res: &'a Resource,
    pub version: &'a str,
    pub namespace: &'a str,
    pub fv: FieldValidation,
}

pub use kedge_core::clock::rfc3339 as now;

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON or YAML object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

pub use kedge_core::json::str_at;

/// Checks `apiVersion` and `kind` against the URL, filling them in when absent from a patch.
fn check_type(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = t.res.api_version(t.version);
    let (av, kind) = (str_at(obj, "/apiVersion"), str_at(obj, "/kind"));
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in the request body (expected {want_av}, Kind={})",
            t.res.kind
        )));
    }
    if kind != t.res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the kind served at this URL ({})",
            t.res.kind
        )));
    }
    if av != want_av {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    Ok(())
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn name_error(res: &Resource, name: &str) -> Option<Cause> {
    let (ok, msg) = if res.key() == "namespaces" {
        (is_dns_label(name), LABEL_MSG)
    } else {
        (is_dns_subdomain(name), SUBDOMAIN_MSG)
    };
    (!ok).then(|| Cause {
        reason: "FieldValueInvalid",
        field: "metadata.name".into(),
        message: format!("Invalid value: {name:?}: {msg}"),
    })
}

fn random_suffix() -> String {
    // Kubernetes' alphabet for generateName: no vowels (no words), no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Validates against the version's CRD schema. Returns warnings (unknown fields under `Warn`).
fn validate_schema(t: &Target, obj: &mut Value, name: &str) -> Result<Vec<String>, ApiError> {
    let Some(schema) = t.res.version(t.version).and_then(|v| v.schema.as_ref()) else {
        return Ok(Vec::new());
    };
    let out = schema::validate(schema, obj);
    if !out.causes.is_empty() {
        return Err(ApiError::invalid(&t.res.kind_group(), name, out.causes));
    }
    let unknown: Vec<String> = out
        .unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match t.fv {
        FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "{kind} in version {v:?} cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = t.res.kind,
            v = t.version,
        ))),
        FieldValidation::Warn => Ok(unknown),
        _ => Ok(Vec::new()),
    }
}

/// Prepares a new object; returns its name and any warnings.
pub fn prepare_create(t: &Target, obj: &mut Value) -> Result<(String, Vec<String>), ApiError> {
    check_type(t, obj)?;
    let meta = meta_mut(obj)?;
    let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if t.res.namespaced {
        if !body_ns.is_empty() && body_ns != t.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(t.namespace));
    } else {
        meta.remove("namespace");
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() && !generate.is_empty() {
        name = format!("{generate}{}", random_suffix());
        meta.insert("name".into(), json!(name));
    }
    if name.is_empty() {
        let cause = Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        };
        return Err(ApiError::invalid(&t.res.kind_group(), "", vec![cause]));
    }
    if let Some(cause) = name_error(t.res, &name) {
        return Err(ApiError::invalid(&t.res.kind_group(), &name, vec![cause]));
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    for k in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "selfLink",
    ] {
        meta.remove(k);
    }
    let warnings = validate_schema(t, obj, &name)?;
    if t.res.version(t.version).is_some_and(|v| v.status) && !t.res.builtin {
        // A CR's status is written only through /status.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    defaults_on_create(t.res, obj, &name)?;
    Ok((name, warnings))
}

fn defaults_on_create(res: &Resource, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    match res.key().as_str() {
        "namespaces" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        "pods" => defaults::pod(obj),
        "secrets" => {
            fold_string_data(obj);
            defaults::secret(obj);
        }
        CRD_KEY => crd_status(res, obj, name)?,
        k if crate::workloads::is_workload(k) => {
            crate::workloads::default(k, obj);
            crate::workloads::validate(res, obj, None)?;
        }
        _ => {}
    }
    Ok(())
}

/// Secret `stringData` is write-only convenience: it is folded into base64 `data`.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
    if let Value::Object(sd) = string_data {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let enc = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            obj["data"][k] = json!(enc);
        }
    }
}

fn crd_status(res: &Resource, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let parsed = resource_from_crd(obj).map_err(|msg| {
        let cause = Cause {
            reason: "FieldValueInvalid",
            field: String::new(),
            message: msg,
        };
        ApiError::invalid(&res.kind_group(), name, vec![cause])
    })?;
    let storage = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["storage"] == json!(true)))
        .map(|v| v["name"].clone())
        .unwrap_or_else(|| json!(parsed.versions[0].name));
    let now = now();
    obj["status"] = json!({
        "acceptedNames": obj["spec"]["names"].clone(),
        "storedVersions": [storage],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
    Ok(())
}

fn without_status_and_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        m.remove("metadata");
    }
    v
}

/// Decides what an update (PUT, or a patch already applied) does to `current`.
/// `status_only` is true for the `/status` subresource.
pub fn prepare_update(
    t: &Target,
    current: &Value,
    mut obj: Value,
    status_only: bool,
) -> Result<(Change, Vec<String>), ApiError> {
    check_type(t, &mut obj)?;
    let name = str_at(current, "/metadata/name").to_string();
    let key = t.res.key();
    let body_name = str_at(&obj, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_rv = str_at(&obj, "/metadata/resourceVersion");
    let cur_rv = str_at(current, "/metadata/resourceVersion");
    if !body_rv.is_empty() && body_rv != cur_rv {
        return Err(ApiError::conflict(&key, &name));
    }
    let has_status_sub = t.res.version(t.version).is_some_and(|v| v.status);
    if status_only {
        // Only status changes through /status.
        let status = obj.get("status").cloned();
        obj = current.clone();
        match status {
            Some(s) => obj["status"] = s,
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else if has_status_sub {
        match current.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    keep_system_metadata(current, &mut obj)?;
    let warnings = validate_schema(t, &mut obj, &name)?;
    if key == "secrets" {
        fold_string_data(&mut obj);
    }
    if crate::workloads::is_workload(&key) && !status_only {
        crate::workloads::default(&key, &mut obj);
        crate::workloads::validate(t.res, &obj, Some(current))?;
    }
    if key == CRD_KEY {
        crd_status(t.res, &mut obj, &name)?;
        if let Some(conds) = current.pointer("/status/conditions") {
            obj["status"]["conditions"] = conds.clone();
        }
    }
    if without_status_and_meta(&obj) != without_status_and_meta(current) {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
        obj["metadata"]["generation"] = json!(generation + 1);
    }
    let mut cmp = obj.clone();
    cmp["metadata"]["resourceVersion"] = json!(cur_rv);
    if cmp == *current {
        return Ok((Change::None, warnings));
    }
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if deleting && !finalizers {
        return Ok((Change::Delete, warnings));
    }
    Ok((Change::Put(obj), warnings))
}

/// Users cannot change uid, creationTimestamp, namespace, deletion fields or generation.
fn keep_system_metadata(current: &Value, obj: &mut Value) -> Result<(), ApiError> {
    let cur = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(obj)?;
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn target<'a>(res: &'a Resource) -> Target<'a> {
        Target {
            res,
            version: "v1",
            namespace: "default",
            fv: FieldValidation::Strict,
        }
    }

    #[test]
    fn create_sets_system_metadata_and_generates_names() {
        let reg = Registry::default();
        let cm = reg.by_key("configmaps").expect("builtin");
        let mut obj =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}});
        let (name, _) = prepare_create(&target(&cm), &mut obj).expect("create");
        assert!(name.starts_with("x-") && name.len() == 7, "{name}");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert!(obj["metadata"]["uid"].is_string());
        assert!(
            obj["metadata"]["creationTimestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }

    #[test]
    fn create_rejects_bad_names_kinds_and_namespaces() {
        let reg = Registry::default();
        let cm = reg.by_key("configmaps").expect("builtin");
        let t = target(&cm);
        let mut bad_name =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
        assert_eq!(
            prepare_create(&t, &mut bad_name).expect_err("bad").code,
            422
        );
        let mut wrong_kind =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}});
        assert_eq!(
            prepare_create(&t, &mut wrong_kind).expect_err("bad").code,
            400
        );
        let mut wrong_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}});
        assert_eq!(
            prepare_create(&t, &mut wrong_ns).expect_err("bad").code,
            400
        );
        let mut no_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert!(
            prepare_create(&t, &mut no_name)
                .expect_err("bad")
                .message
                .contains("name or generateName")
        );
    }

    #[test]
    fn update_conflicts_on_stale_versions_and_skips_no_ops() {
        let reg = Registry::default();
        let cm = reg.by_key("configmaps").expect("builtin");
        let t = target(&cm);
        let current = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a",
            "namespace": "default", "uid": "u", "resourceVersion": "5", "generation": 1}, "data": {"k": "v"}});
        let mut stale = current.clone();
        stale["metadata"]["resourceVersion"] = json!("4");
        assert_eq!(
            prepare_update(&t, &current, stale, false)
                .expect_err("409")
                .code,
            409
        );
        let (same, _) = prepare_update(&t, &current, current.clone(), false).expect("ok");
        assert!(matches!(same, Change::None));
        let mut changed = current.clone();
        changed["data"]["k"] = json!("w");
        changed["metadata"]["uid"] = json!("forged");
        match prepare_update(&t, &current, changed, false).expect("ok") {
            (Change::Put(v), _) => {
                assert_eq!(v["metadata"]["uid"], "u");
                assert_eq!(v["metadata"]["generation"], 2);
            }
            _ => panic!("expected a put"),
        }
    }

    #[test]
    fn removing_the_last_finalizer_of_a_deleting_object_deletes_it() {
        let reg = Registry::default();
        let cm = reg.by_key("configmaps").expect("builtin");
        let current = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x"], "resourceVersion": "3"}});
        let mut next = current.clone();
        next["metadata"]["finalizers"] = json!([]);
        let (change, _) = prepare_update(&target(&cm), &current, next, false).expect("ok");
        assert!(matches!(change, Change::Delete));
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = json!({"stringData": {"pw": "hunter2"}});
        fold_string_data(&mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"pw": "aHVudGVyMg=="}}));
    }
}
