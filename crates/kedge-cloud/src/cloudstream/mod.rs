//! CloudStream: the kubelet API for edge nodes, so a real kube-apiserver (`--kubeconfig`)
//! reaches their pods for `kubectl logs/exec/attach/port-forward` without iptables. Each edge
//! Node's `Hostname` address and kubelet port point here ([`point_at`]); kube-apiserver calls
//! `/containerLogs`, `/exec`, `/attach` and `/portForward` with its kubelet client
//! certificate, checked against the authority the operator names (and its common name against
//! a list); the streams then go through the node's hub session exactly as the embedded API's
//! do (`kedge_apiserver::podstreams`).

pub mod path;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;
use kedge_apiserver::ApiError;
use kedge_apiserver::podstreams;
use kedge_http::PeerCerts;
use kedge_stream::NodeStreams;
use kube::Api;
use serde_json::{Value, json};

/// Where and for whom the kubelet API is served.
#[derive(Debug, Clone)]
pub struct CloudStreamConfig {
    pub addr: SocketAddr,
    /// The name or address kube-apiserver dials: every edge Node's `Hostname` address.
    pub address: String,
    /// The authority that signs kube-apiserver's kubelet client certificate (PEM).
    pub client_ca: PathBuf,
    /// The client certificates' common names allowed in; empty: any the authority signed.
    pub client_names: Vec<String>,
}

/// What edge Nodes advertise as their kubelet: this cloud's address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

/// Points a Node status at `ep`: its kubelet port, and its `Hostname` address (the first type
/// kube-apiserver's `--kubelet-preferred-address-types` prefers by default) replaced or added.
/// The edge's other addresses stay as it reported them; a status without addresses (a partial
/// update, merged into the stored one) leaves them alone.
pub fn point_at(status: &mut Value, ep: &Endpoint) {
    let Some(obj) = status.as_object_mut() else {
        return;
    };
    obj.insert(
        "daemonEndpoints".into(),
        json!({"kubeletEndpoint": {"Port": ep.port}}),
    );
    let Some(addresses) = obj.get_mut("addresses").and_then(Value::as_array_mut) else {
        return;
    };
    addresses.retain(|a| a["type"] != "Hostname");
    addresses.insert(0, json!({"type": "Hostname", "address": ep.address}));
}

#[derive(Clone)]
struct Ctx {
    streams: Arc<dyn NodeStreams>,
    client: kube::Client,
    names: Arc<Vec<String>>,
}

/// Serves the kubelet API on `cfg.addr` with a certificate of `ca` naming `cfg.address`.
pub async fn start(
    cfg: &CloudStreamConfig,
    ca: &kedge_pki::Ca,
    streams: Arc<dyn NodeStreams>,
    client: kube::Client,
) -> Result<(kedge_http::Listener, Endpoint), crate::CloudError> {
    let roots = kedge_pki::node::roots_from_pem_file(&cfg.client_ca)?;
    let names = [cfg.address.clone()];
    let tls = ca.mtls_server_config_for("kedge-cloudstream", &names, roots, true)?;
    let ctx = Ctx {
        streams,
        client,
        names: Arc::new(cfg.client_names.clone()),
    };
    let router = axum::Router::new().fallback(handle).with_state(ctx);
    let l = kedge_http::Listener::bind(cfg.addr, tls, router).await?;
    tracing::info!(addr = %l.addr, address = %cfg.address, "CloudStream (kubelet API for edge nodes) listening");
    let ep = Endpoint {
        address: cfg.address.clone(),
        port: l.addr.port(),
    };
    Ok((l, ep))
}

async fn handle(
    State(ctx): State<Ctx>,
    axum::Extension(peer): axum::Extension<PeerCerts>,
    req: Request,
) -> Response {
    serve(ctx, peer, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(ctx: Ctx, peer: PeerCerts, req: Request) -> Result<Response, ApiError> {
    let who = peer
        .0
        .first()
        .and_then(|c| kedge_pki::node::cert_common_name(c))
        .unwrap_or_default();
    if !ctx.names.is_empty() && !ctx.names.contains(&who) {
        tracing::warn!(client = %who, "kubelet API call refused: not in kubeletClientNames");
        return Err(ApiError::forbidden(format!(
            "{who:?} may not use the kubelet API of edge nodes (kedge cloud's kubeletClientNames)"
        )));
    }
    let query = podstreams::pairs(req.uri().query());
    let call =
        path::parse(req.uri().path(), query).map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::debug!(client = %who, sub = call.subresource, namespace = %call.namespace, pod = %call.pod, "kubelet API call");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &call.namespace);
    let pod = match pods.get_opt(&call.pod).await {
        Ok(Some(p)) => serde_json::to_value(p).map_err(|e| ApiError::internal(e.to_string()))?,
        Ok(None) => return Err(ApiError::not_found("pods", &call.pod)),
        Err(e) => {
            return Err(ApiError::unavailable(format!(
                "reading pod {}/{}: {}",
                call.namespace,
                call.pod,
                crate::objects::brief(&e)
            )));
        }
    };
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str);
    if call.uid.is_some() && call.uid.as_deref() != uid {
        return Err(ApiError::not_found("pods", &call.pod));
    }
    podstreams::serve_pod(req, ctx.streams, &pod, call.subresource, call.query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_status_points_at_the_cloud_and_keeps_its_other_addresses() {
        let mut status = json!({
            "addresses": [{"type": "InternalIP", "address": "10.0.0.7"},
                          {"type": "Hostname", "address": "edge-7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
            "conditions": [],
        });
        let ep = Endpoint {
            address: "cloud.example".into(),
            port: 10351,
        };
        point_at(&mut status, &ep);
        assert_eq!(
            status["addresses"],
            json!([{"type": "Hostname", "address": "cloud.example"},
                   {"type": "InternalIP", "address": "10.0.0.7"}])
        );
        assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10351);
        assert_eq!(status["conditions"], json!([]));
        let mut partial = json!({"conditions": []});
        point_at(&mut partial, &ep);
        assert_eq!(partial.get("addresses"), None);
        assert_eq!(partial["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10351);
    }
}
