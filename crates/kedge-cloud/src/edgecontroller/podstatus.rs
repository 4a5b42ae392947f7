//! Pod status from the edge: `update <namespace>/podstatus/<name>` with KubeEdge's
//! `PodStatusRequest` (`{"UID": …, "Name": …, "Status": <PodStatus>}`). It is applied to the pod's
//! `status` only when the pod is bound to the sending node and is the same pod (UID) the edge
//! runs; a report about a pod that was deleted or recreated is answered with an error, so the
//! edge drops it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

/// KubeEdge's `PodStatusRequest` (Go field names, no JSON tags).
#[derive(Debug, Deserialize, PartialEq)]
pub struct PodStatusRequest {
    #[serde(rename = "UID")]
    pub uid: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Status")]
    pub status: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum PodStatusError {
    #[error("pod status content is not a PodStatusRequest: {0}")]
    Content(#[from] serde_json::Error),
    #[error("pod status for {in_content:?} sent on the resource of pod {in_resource:?}")]
    Mismatch {
        in_content: String,
        in_resource: String,
    },
    #[error("pod {0} no longer exists (deleted, or recreated with another UID)")]
    Gone(String),
    #[error("pod {pod} is not bound to node {node}")]
    NotBound { pod: String, node: String },
    #[error("a pod deletion from the edge needs preconditions.uid")]
    NoUid,
    #[error("Kubernetes API: {}", crate::objects::brief(.0))]
    Kube(#[from] kube::Error),
}

/// Parses and checks a report for the pod `name`.
pub fn parse(name: &str, content: &Value) -> Result<PodStatusRequest, PodStatusError> {
    let req = PodStatusRequest::deserialize(content)?;
    if req.name != name {
        return Err(PodStatusError::Mismatch {
            in_content: req.name,
            in_resource: name.into(),
        });
    }
    Ok(req)
}

/// Applies `req` to `namespace/name` if that pod is bound to `node` and has the reported UID.
pub async fn apply(
    client: &kube::Client,
    node: &str,
    namespace: &str,
    req: &PodStatusRequest,
) -> Result<(), PodStatusError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let key = format!("{namespace}/{}", req.name);
    let Some(pod) = pods.get_opt(&req.name).await? else {
        return Err(PodStatusError::Gone(key));
    };
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if bound != Some(node) {
        return Err(PodStatusError::NotBound {
            pod: key,
            node: node.into(),
        });
    }
    if pod.metadata.uid.as_deref() != Some(req.uid.as_str()) {
        return Err(PodStatusError::Gone(key));
    }
    let p = json!({"status": replacing(&pod, &req.status)});
    pods.patch_status(&req.name, &PatchParams::default(), &Patch::Merge(&p))
        .await?;
    Ok(())
}

/// The strategic merge patch a stock edgecore sends as `podpatch`/`nodepatch` content: a JSON
/// string holding the patch (Go sends its `[]byte` patch as a string), or the patch itself.
pub fn patch_of(content: &Value) -> Result<Value, serde_json::Error> {
    match content {
        Value::String(s) => serde_json::from_str(s),
        other => Ok(other.clone()),
    }
}

/// Applies a stock edgecore's status patch to `namespace/name` if that pod is bound to `node`;
/// returns the pod as stored (edged keeps it).
pub async fn patch(
    client: &kube::Client,
    node: &str,
    namespace: &str,
    name: &str,
    patch: &Value,
) -> Result<Pod, PodStatusError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let key = format!("{namespace}/{name}");
    let Some(pod) = pods.get_opt(name).await? else {
        return Err(PodStatusError::Gone(key));
    };
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
        return Err(PodStatusError::NotBound {
            pod: key,
            node: node.into(),
        });
    }
    Ok(pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?)
}

/// A merge patch that makes the pod's status what the edge reported: fields the report no
/// longer has (a `message` that no longer applies, say) are removed, except those the API server
/// owns.
fn replacing(pod: &Pod, reported: &Value) -> Value {
    let mut patch = reported.clone();
    let current = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
    if let (Some(cur), Some(p)) = (current.as_object(), patch.as_object_mut()) {
        for k in cur.keys().filter(|k| *k != "qosClass") {
            p.entry(k.clone()).or_insert(Value::Null);
        }
    }
    patch
}

/// The pod UID a deletion from the edge names: a DeleteOptions with `preconditions.uid`.
pub fn uid_to_delete(content: &Value) -> Result<String, PodStatusError> {
    content
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .ok_or(PodStatusError::NoUid)
}

/// Removes `namespace/name` once its node stopped its containers: only that pod (UID), only
/// if bound to `node`. A pod already gone is not an error (the edge may repeat itself).
pub async fn delete(
    client: &kube::Client,
    node: &str,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), PodStatusError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(pod) = pods.get_opt(name).await? else {
        return Ok(());
    };
    if pod.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
        return Err(PodStatusError::NotBound {
            pod: format!("{namespace}/{name}"),
            node: node.into(),
        });
    }
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(name, &dp).await {
        Ok(_) => Ok(()),
        // Gone meanwhile, or recreated under the same name: nothing of ours is left to delete.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_replaces_the_status_but_what_the_api_server_owns() {
        let pod: Pod = serde_json::from_value(json!({"status": {"qosClass": "BestEffort",
            "message": "sandbox failed", "phase": "Pending"}}))
        .expect("pod");
        let p = replacing(&pod, &json!({"phase": "Running"}));
        assert_eq!(p, json!({"phase": "Running", "message": null}));
    }

    #[test]
    fn a_status_patch_arrives_as_a_string_holding_json() {
        let p =
            r#"{"status":{"$setElementOrder/conditions":[{"type":"Ready"}],"phase":"Running"}}"#;
        let v = patch_of(&json!(p)).expect("parses");
        assert_eq!(v["status"]["phase"], "Running");
        assert_eq!(
            patch_of(&json!({"status": {}})).expect("object"),
            json!({"status": {}})
        );
        assert!(patch_of(&json!("{not json")).is_err());
    }

    #[test]
    fn a_request_names_the_pod_of_its_resource() {
        let c = json!({"UID": "u1", "Name": "web", "Status": {"phase": "Running"}});
        let r = parse("web", &c).expect("parses");
        assert_eq!(r.uid, "u1");
        assert_eq!(r.status["phase"], "Running");
        assert!(matches!(
            parse("db", &c),
            Err(PodStatusError::Mismatch { .. })
        ));
        assert!(matches!(
            parse("web", &json!({"phase": "Running"})),
            Err(PodStatusError::Content(_))
        ));
    }
}
