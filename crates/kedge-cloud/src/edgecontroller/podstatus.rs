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
    #[error("Kubernetes API: {0}")]
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
    let p = json!({"status": req.status});
    pods.patch_status(&req.name, &PatchParams::default(), &Patch::Merge(&p))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
