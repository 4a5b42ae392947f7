//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets: an autoscaling/v1
//! `Scale` over the object's `spec.replicas` (what `kubectl scale` and autoscalers use).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kedge_core::labels::Selector;
use serde_json::{Value, json};

use crate::api::Api;
use crate::call::Call;
use crate::error::ApiError;
use crate::meta::{FieldValidation, Target, prepare_update, str_at};
use crate::patch::{self, PatchKind};
use crate::request::decode_body;
use crate::schema::Cause;
use crate::store::Written;

/// The Scale an object shows.
pub fn of(obj: &Value) -> Value {
    let selector = Selector::from_json(&obj["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

pub async fn handle(api: Arc<Api>, call: Call) -> Result<Response, ApiError> {
    let key = call.path.res.key();
    let name = call.path.name.clone().unwrap_or_default();
    let ns = call.namespace().to_string();
    let current = || {
        api.store
            .get(&key, &ns, &name)
            .map(|o| o.value())
            .ok_or_else(|| ApiError::not_found(&key, &name))
    };
    let wanted = match call.method {
        Method::GET => return Ok(respond(&of(&current()?))),
        Method::PUT => scale_body(&call)?,
        Method::PATCH => {
            let ct = call.header("content-type");
            let kind = PatchKind::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media(format!("unknown patch type {ct}")))?;
            let p = decode_body("application/json", &call.body, &call.path.res)?;
            let mut s = of(&current()?);
            patch::apply(kind, &mut s, p).map_err(|e| ApiError::bad_request(e.to_string()))?;
            s
        }
        m => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {m}"
            )));
        }
    };
    let replicas = replicas(&wanted, &name)?;
    let want_rv = str_at(&wanted, "/metadata/resourceVersion").to_string();
    let res = call.path.res.clone();
    let version = call.path.version.clone();
    let api2 = api.clone();
    let written = tokio::task::spawn_blocking(move || {
        api2.store.write::<ApiError>(&res.key(), &ns, &name, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(&res.key(), &name))?;
            let current = cur.value();
            if !want_rv.is_empty() && want_rv != str_at(&current, "/metadata/resourceVersion") {
                return Err(ApiError::conflict(&res.key(), &name));
            }
            let mut next = current.clone();
            next["spec"]["replicas"] = json!(replicas);
            let t = Target {
                res: &res,
                version: &version,
                namespace: &ns,
                fv: FieldValidation::parse(None)?,
            };
            Ok(prepare_update(&t, &current, next, false)?.0)
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("write task failed: {e}")))??;
    match written {
        Written::Put(o) | Written::Unchanged(Some(o)) => Ok(respond(&of(&o.value()))),
        _ => Err(ApiError::internal("scale did not store the object")),
    }
}

fn scale_body(call: &Call) -> Result<Value, ApiError> {
    if call.body.starts_with(b"k8s\0") {
        return crate::protobuf::decode("autoscaling", "v1", "Scale", &call.body)
            .map_err(|e| ApiError::bad_request(e.to_string()));
    }
    decode_body(call.header("content-type"), &call.body, &call.path.res)
}

fn replicas(scale: &Value, name: &str) -> Result<i64, ApiError> {
    match scale["spec"]["replicas"].as_i64() {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(ApiError::invalid(
            "Scale.autoscaling",
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "spec.replicas".into(),
                message: format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    scale["spec"]["replicas"]
                ),
            }],
        )),
    }
}

fn respond(v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_shows_desired_and_current_replicas_and_the_selector() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u",
                "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}});
        let s = of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert!(replicas(&json!({"spec": {"replicas": -1}}), "web").is_err());
        assert_eq!(
            replicas(&json!({"spec": {"replicas": 0}}), "web").ok(),
            Some(0)
        );
    }
}
