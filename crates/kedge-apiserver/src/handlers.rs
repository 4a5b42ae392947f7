//! The verbs: get, list, create, update, patch, delete (watch is in `watch.rs`).

use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use crate::api::Api;
use crate::call::{Call, Filter, at_version, served_json, served_value, to_storage};
use crate::error::ApiError;
use crate::graceful::{self, PodDeletion};
use crate::meta::{FieldValidation, Target, now, prepare_create, prepare_update, str_at};
use crate::patch::{self, PatchKind};
use crate::registry::{CRD_KEY, Resource};
use crate::request::decode_body;
use crate::store::{Change, Stored, Written};
use crate::table;

/// Namespaces that always exist and cannot be deleted.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

fn json_response(code: StatusCode, body: Bytes, warnings: &[String]) -> Response {
    let mut resp = (code, [("content-type", "application/json")], body).into_response();
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

pub async fn handle(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    if call.path.subresource.as_deref() == Some("scale") {
        return crate::scale::handle(api, call).await;
    }
    if call.path.subresource.as_deref() == Some("binding") && call.method == Method::POST {
        return bind(api, call).await;
    }
    let is_item = call.path.name.is_some();
    match (call.method.clone(), is_item) {
        (Method::GET, true) => get(&api, &call),
        (Method::GET, false) if call.query.flag("watch") => crate::watch::start(api, &call),
        (Method::GET, false) => list(&api, &call),
        (Method::POST, false) => create(api, call).await,
        (Method::PUT, true) => update(api, call).await,
        (Method::PATCH, true) => patch(api, call).await,
        (Method::DELETE, true) => delete(api, call).await,
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m}"
        ))),
    }
}

fn object_response(call: &Call, obj: &Stored, code: StatusCode, warnings: &[String]) -> Response {
    let (res, version) = (&call.path.res, &call.path.version);
    if let Some(include) = call.table_include() {
        let t = table::render(
            res,
            version,
            &[served_value(res, version, obj)],
            json!({}),
            &include,
        );
        let mut r = json_response(code, to_bytes(&t), warnings);
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static(table::CONTENT_TYPE),
        );
        return r;
    }
    json_response(code, served_json(res, version, obj), warnings)
}

fn get(api: &Api, call: &Call) -> Result<Response, ApiError> {
    let name = call.path.name.as_deref().unwrap_or_default();
    let obj = api
        .store
        .get(&call.path.res.key(), call.namespace(), name)
        .ok_or_else(|| ApiError::not_found(&call.path.res.key(), name))?;
    Ok(object_response(call, &obj, StatusCode::OK, &[]))
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    use base64::Engine;
    let token = json!({"rv": rv, "ns": ns, "name": name});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue: Invalid value: the continue token is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_u64().ok_or_else(bad)?,
        str_at(&v, "/ns").to_string(),
        str_at(&v, "/name").to_string(),
    ))
}

fn list(api: &Api, call: &Call) -> Result<Response, ApiError> {
    let (res, version) = (&call.path.res, call.path.version.as_str());
    let filter = Filter::from_query(&call.query)?;
    let (after, token_rv) = match call.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (token_rv, ns, name) = decode_continue(token)?;
            (Some((ns, name)), Some(token_rv))
        }
        None => (None, None),
    };
    let limit = call
        .query
        .u64("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let keep = |o: &Stored| filter.matches(o);
    let (items, more, rev) = api.store.page(
        &res.key(),
        call.path.namespace.as_deref(),
        after.as_ref(),
        limit,
        &keep,
    );
    // A continued list says the revision its first page had.
    let rev = token_rv.unwrap_or(rev);
    let items: Vec<&Arc<Stored>> = items.iter().collect();
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if more && let Some(last) = items.last() {
        meta["continue"] = json!(encode_continue(rev, &last.namespace, &last.name));
    }
    if let Some(include) = call.table_include() {
        let values: Vec<Value> = items
            .iter()
            .map(|o| served_value(res, version, o))
            .collect();
        let t = table::render(res, version, &values, meta, &include);
        let mut r = json_response(StatusCode::OK, to_bytes(&t), &[]);
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static(table::CONTENT_TYPE),
        );
        return Ok(r);
    }
    // Splice the stored bytes into the list document instead of re-serialising every item.
    let head =
        json!({"kind": res.list_kind, "apiVersion": res.api_version(version), "metadata": meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size: usize = items.iter().map(|o| o.json.len() + 1).sum();
    let mut out = BytesMut::with_capacity(head.len() + size + 16);
    out.put_slice(&head[..head.len() - 1]);
    out.put_slice(b",\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&served_json(res, version, o));
    }
    out.put_slice(b"]}");
    Ok(json_response(StatusCode::OK, out.freeze(), &[]))
}

fn field_validation(call: &Call) -> Result<FieldValidation, ApiError> {
    FieldValidation::parse(call.query.get("fieldValidation"))
}

/// Runs a store write on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("write task failed: {e}")))?
}

fn check_namespace_open(api: &Api, res: &Resource, ns: &str) -> Result<(), ApiError> {
    if !res.namespaced {
        return Ok(());
    }
    let nsobj = api
        .store
        .get("namespaces", "", ns)
        .ok_or_else(|| ApiError::not_found("namespaces", ns))?;
    if nsobj
        .value()
        .pointer("/metadata/deletionTimestamp")
        .is_some()
    {
        return Err(ApiError::forbidden(format!(
            "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            res.key()
        )));
    }
    Ok(())
}

async fn create(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    let fv = field_validation(&call)?;
    let mut obj = decode_body(call.header("content-type"), &call.body, &call.path.res)?;
    let res = call.path.res.clone();
    let target = Target {
        res: &res,
        version: &call.path.version,
        namespace: call.namespace(),
        fv,
    };
    let (name, warnings) = prepare_create(&target, &mut obj)?;
    check_namespace_open(&api, &res, call.namespace())?;
    admit(&api, &res, call.namespace(), &obj)?;
    let obj = to_storage(&res, obj)?;
    let ns = call.namespace().to_string();
    let api2 = api.clone();
    let written = blocking(move || {
        api2.store.write(&res.key(), &ns, &name, |cur| match cur {
            Some(_) => Err(ApiError::already_exists(&res.key(), &name)),
            None => Ok(Change::Put(obj)),
        })
    })
    .await?;
    after_write(&api, &call.path.res, &written).await;
    match written {
        Written::Put(o) => Ok(object_response(&call, &o, StatusCode::CREATED, &warnings)),
        _ => Err(ApiError::internal("create did not store the object")),
    }
}

const RULES_KEY: &str = "rules.rules.kubeedge.io";
const RULE_ENDPOINTS_KEY: &str = "ruleendpoints.rules.kubeedge.io";

/// Admission, as KubeEdge's webhook does for Rules: a new Rule must name existing endpoints of a
/// supported pair and must not take another rule's source (kubectl shows the reason).
fn admit(api: &Api, res: &Resource, ns: &str, obj: &Value) -> Result<(), ApiError> {
    if res.key() != RULES_KEY {
        return Ok(());
    }
    let Some(rule) = kedge_core::rule::Rule::from_object(obj) else {
        return Ok(()); // the schema has already said what is missing
    };
    let values = |key: &str| -> Vec<Value> {
        api.store
            .list(key, Some(ns))
            .0
            .iter()
            .map(|o| o.value())
            .collect()
    };
    let endpoints: Vec<_> = values(RULE_ENDPOINTS_KEY)
        .iter()
        .filter_map(kedge_core::rule::Endpoint::from_object)
        .collect();
    let others: Vec<_> = values(RULES_KEY)
        .iter()
        .filter_map(kedge_core::rule::Rule::from_object)
        .collect();
    kedge_core::rule::admit(&rule, &endpoints, &others).map_err(|e| {
        ApiError::bad_request(format!(
            "admission webhook \"validaterule.kubeedge.io\" denied the request: {e}"
        ))
    })
}

/// Keeps the registry and namespaces in step with what was written.
async fn after_write(api: &Arc<Api>, res: &Resource, written: &Written) {
    match (res.key().as_str(), written) {
        (CRD_KEY, Written::Put(o)) => {
            if let Err(e) = api.registry.apply_crd(&o.value()) {
                tracing::warn!(crd = %o.name, error = %e, "CRD not served");
            }
            api.bump_discovery();
        }
        (CRD_KEY, Written::Deleted(o)) => {
            api.registry.remove_crd(&o.name);
            api.bump_discovery();
        }
        (_, Written::Deleted(o)) if res.namespaced => {
            let (api, ns) = (api.clone(), o.namespace.clone());
            let _ = blocking(move || {
                finalize_namespace_if_empty(&api, &ns);
                Ok(())
            })
            .await;
        }
        _ => {}
    }
}

async fn update(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    let obj = decode_body(call.header("content-type"), &call.body, &call.path.res)?;
    write_existing(api, call, move |_| Ok(obj)).await
}

async fn patch(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    let ct = call.header("content-type").to_string();
    let kind = PatchKind::from_content_type(&ct).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format ({ct}) - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
             application/strategic-merge-patch+json"
        ))
    })?;
    if kind == PatchKind::Strategic && !call.path.res.builtin {
        return Err(ApiError::unsupported_media(
            "strategic merge patch is not supported for custom resources: use a JSON merge patch \
             (application/merge-patch+json) or a JSON patch",
        ));
    }
    let body_ct = if kind == PatchKind::Apply {
        "application/yaml"
    } else {
        "application/json"
    };
    let p = decode_body(body_ct, &call.body, &call.path.res)?;
    write_existing(api, call, move |cur| {
        let mut v = cur.clone();
        patch::apply(kind, &mut v, p).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(v)
    })
    .await
}

/// PUT and PATCH: compute the new object from the current one and commit it.
async fn write_existing(
    api: Arc<Api>,
    call: Call,
    next: impl FnOnce(&Value) -> Result<Value, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let fv = field_validation(&call)?;
    let res = call.path.res.clone();
    let (ns, name) = (
        call.namespace().to_string(),
        call.path.name.clone().unwrap_or_default(),
    );
    let version = call.path.version.clone();
    let status_only = call.path.subresource.as_deref() == Some("status");
    let api2 = api.clone();
    let (written, warnings) = blocking(move || {
        let mut warnings = Vec::new();
        let written = api2
            .store
            .write::<ApiError>(&res.key(), &ns, &name, |cur| {
                let cur = cur.ok_or_else(|| ApiError::not_found(&res.key(), &name))?;
                // Changed as the caller sees it, stored as the resource stores it.
                let current = at_version(&res, &version, cur.value())?;
                let target = Target {
                    res: &res,
                    version: &version,
                    namespace: &ns,
                    fv,
                };
                let (change, w) = prepare_update(&target, &current, next(&current)?, status_only)?;
                warnings = w;
                Ok(match change {
                    Change::Put(v) => Change::Put(to_storage(&res, v)?),
                    other => other,
                })
            })?;
        Ok((written, warnings))
    })
    .await?;
    after_write(&api, &call.path.res, &written).await;
    written_response(&call, written, &warnings)
}

/// The answer to an update or delete: the object as it now is (or as it was, once deleted).
fn written_response(
    call: &Call,
    written: Written,
    warnings: &[String],
) -> Result<Response, ApiError> {
    match written {
        Written::Put(o) | Written::Deleted(o) | Written::Unchanged(Some(o)) => {
            Ok(object_response(call, &o, StatusCode::OK, warnings))
        }
        Written::Unchanged(None) => {
            let name = call.path.name.as_deref().unwrap_or("");
            Err(ApiError::not_found(&call.path.res.key(), name))
        }
    }
}

/// Whether the node a pod is bound to exists (so something will stop its containers).
pub(crate) fn pod_node_exists(api: &Api, pod: &Value) -> bool {
    let node = str_at(pod, "/spec/nodeName");
    !node.is_empty() && api.store.get("nodes", "", node).is_some()
}

/// The finalizer a DELETE's propagation policy puts on an object for the garbage collector:
/// `Orphan` (or the older `orphanDependents: true`) and `Foreground`; `Background`, the default,
/// needs none. Pods own nothing: their deletion is always the node's graceful one.
fn propagation_finalizer(res: &Resource, options: &Value) -> Option<&'static str> {
    if matches!(res.key().as_str(), "pods" | "namespaces") {
        return None;
    }
    match options.get("propagationPolicy").and_then(Value::as_str) {
        Some("Orphan") => Some(crate::gc::ORPHAN),
        Some("Foreground") => Some(crate::gc::FOREGROUND),
        Some(_) => None,
        None => {
            (options.get("orphanDependents") == Some(&json!(true))).then_some(crate::gc::ORPHAN)
        }
    }
}

/// What a DELETE does to one object: mark it (finalizers, namespaces, pods a node runs) or
/// remove it.
pub(crate) fn delete_decision(
    res: &Resource,
    cur: &Value,
    options: &Value,
    node_exists: bool,
) -> Result<Change, ApiError> {
    let name = str_at(cur, "/metadata/name");
    let key = res.key();
    for (field, ptr) in [
        ("uid", "/metadata/uid"),
        ("resourceVersion", "/metadata/resourceVersion"),
    ] {
        if let Some(want) = options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
            && want != str_at(cur, ptr)
        {
            return Err(ApiError::conflict_msg(
                &key,
                name,
                &format!(
                    "Precondition failed: {field}: {want}, {field} in object meta: {}",
                    str_at(cur, ptr)
                ),
            ));
        }
    }
    // Only a DELETE that asks for propagation changes the object before marking it.
    let with_finalizer;
    let cur = match propagation_finalizer(res, options) {
        Some(f) if cur.pointer("/metadata/deletionTimestamp").is_none() => {
            let mut next = cur.clone();
            let meta = &mut next["metadata"];
            if !meta["finalizers"].is_array() {
                meta["finalizers"] = json!([]);
            }
            if let Some(fs) = meta["finalizers"].as_array_mut()
                && !fs.iter().any(|x| x == f)
            {
                fs.push(json!(f));
            }
            with_finalizer = next;
            &with_finalizer
        }
        _ => cur,
    };
    let finalizers = cur
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if key == "namespaces" || finalizers {
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Change::None);
        }
        let mut next = cur.clone();
        next["metadata"]["deletionTimestamp"] = json!(now());
        next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if key == "namespaces" {
            next["status"]["phase"] = json!("Terminating");
        }
        return Ok(Change::Put(next));
    }
    if key == "pods" {
        let now_s = jiff::Timestamp::now().as_second();
        return Ok(match graceful::decide(cur, options, node_exists, now_s) {
            PodDeletion::Now => Change::Delete,
            PodDeletion::Mark(next) => Change::Put(next),
            PodDeletion::AlreadyMarked => Change::None,
        });
    }
    Ok(Change::Delete)
}

async fn delete(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    let res = call.path.res.clone();
    let (ns, name) = (
        call.namespace().to_string(),
        call.path.name.clone().unwrap_or_default(),
    );
    if res.key() == "namespaces" && SYSTEM_NAMESPACES[..3].contains(&name.as_str()) {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let options = delete_options(&call)?;
    let api2 = api.clone();
    let written = blocking(move || {
        // Only a pod's deletion depends on its node (graceful when a node runs it).
        let node_exists = res.key() == "pods"
            && api2
                .store
                .get(&res.key(), &ns, &name)
                .is_some_and(|o| pod_node_exists(&api2, &o.value()));
        let written = api2.store.write(&res.key(), &ns, &name, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(&res.key(), &name))?;
            delete_decision(&res, &cur.value(), &options, node_exists)
        })?;
        match res.key().as_str() {
            "namespaces" => empty_namespace(&api2, &name),
            CRD_KEY => {
                if let Written::Deleted(_) = written {
                    remove_all_of(&api2, &name);
                }
            }
            _ => {}
        }
        Ok(written)
    })
    .await?;
    after_write(&api, &call.path.res, &written).await;
    written_response(&call, written, &[])
}

/// `pods/<name>/binding`: a scheduler assigns the pod to a node (once).
async fn bind(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    let binding = decode_body(call.header("content-type"), &call.body, &call.path.res)?;
    let node = str_at(&binding, "/target/name").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(
            "a Binding needs target.name (the node)",
        ));
    }
    let (ns, name) = (
        call.namespace().to_string(),
        call.path.name.clone().unwrap_or_default(),
    );
    let api2 = api.clone();
    blocking(move || {
        api2.store.write::<ApiError>("pods", &ns, &name, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found("pods", &name))?;
            let mut pod = cur.value();
            let bound = str_at(&pod, "/spec/nodeName");
            if !bound.is_empty() {
                return Err(ApiError::conflict_msg(
                    "pods",
                    &name,
                    &format!("pod {name} is already assigned to node {bound:?}"),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let cond = json!({"type": "PodScheduled", "status": "True",
                              "lastTransitionTime": now()});
            let conds = &mut pod["status"]["conditions"];
            if !conds.is_array() {
                *conds = json!([]);
            }
            if let Some(cs) = conds.as_array_mut() {
                cs.retain(|c| c["type"] != "PodScheduled");
                cs.push(cond);
            }
            Ok(Change::Put(pod))
        })
    })
    .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, to_bytes(&status), &[]))
}

/// A DELETE's options: its body (JSON, or protobuf from client-go's typed clients), with the
/// query's `propagationPolicy` and `gracePeriodSeconds` where the body has none.
fn delete_options(call: &Call) -> Result<Value, ApiError> {
    let mut options = if call.body.is_empty() {
        json!({})
    } else if call.body.starts_with(b"k8s\0") {
        crate::protobuf::delete_options(&call.body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
    } else {
        decode_body("application/json", &call.body, &call.path.res)?
    };
    if !options.is_object() {
        return Err(ApiError::bad_request("DeleteOptions must be an object"));
    }
    if options.get("propagationPolicy").is_none()
        && let Some(p) = call.query.get("propagationPolicy")
    {
        options["propagationPolicy"] = json!(p);
    }
    if options.get("gracePeriodSeconds").is_none()
        && let Some(g) = call.query.u64("gracePeriodSeconds")?
    {
        options["gracePeriodSeconds"] = json!(g);
    }
    Ok(options)
}

/// Deletes every object in a terminating namespace (honouring their finalizers), then the
/// namespace itself once nothing is left.
fn empty_namespace(api: &Api, ns: &str) {
    for r in api.registry.all().into_iter().filter(|r| r.namespaced) {
        for obj in api.store.list(&r.key(), Some(ns)).0 {
            let node_exists = r.key() == "pods" && pod_node_exists(api, &obj.value());
            let result = api
                .store
                .write::<ApiError>(&r.key(), ns, &obj.name, |cur| match cur {
                    Some(c) => delete_decision(&r, &c.value(), &json!({}), node_exists),
                    None => Ok(Change::None),
                });
            if let Err(e) = result {
                tracing::warn!(namespace = ns, object = %obj.name, error = %e, "namespace cleanup");
            }
        }
    }
    finalize_namespace_if_empty(api, ns);
}

/// Removes a terminating namespace once no object is left in it.
fn finalize_namespace_if_empty(api: &Api, ns: &str) {
    let Some(nsobj) = api.store.get("namespaces", "", ns) else {
        return;
    };
    if nsobj
        .value()
        .pointer("/metadata/deletionTimestamp")
        .is_none()
    {
        return;
    }
    let empty = api
        .registry
        .all()
        .iter()
        .filter(|r| r.namespaced)
        .all(|r| api.store.count_in(&r.key(), ns) == 0);
    if empty {
        let r = api
            .store
            .write::<ApiError>("namespaces", "", ns, |_| Ok(Change::Delete));
        if let Err(e) = r {
            tracing::warn!(namespace = ns, error = %e, "namespace finalization");
        }
    }
}

/// A deleted CRD takes its custom resources with it.
fn remove_all_of(api: &Api, crd_name: &str) {
    for obj in api.store.list(crd_name, None).0 {
        let r = api
            .store
            .write::<ApiError>(crd_name, &obj.namespace, &obj.name, |_| Ok(Change::Delete));
        if let Err(e) = r {
            tracing::warn!(crd = crd_name, object = %obj.name, error = %e, "CRD cleanup");
        }
    }
}
