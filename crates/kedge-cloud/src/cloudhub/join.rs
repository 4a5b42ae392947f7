//! The join server, as KubeEdge's (port 10002):
//! - `GET /ca.crt`: the CA certificate, DER.
//! - `GET /edge.crt`: body = a DER CSR for `CN=system:node:<NodeName>`, headers `NodeName` and
//!   `Authorization: Bearer <token>`; answer = the signed client certificate, DER. An edge that
//!   renews presents its current certificate for that node instead of a token (TLS client auth
//!   is optional on this port), so renewal outlives the join token.
//! - `GET /node/{name}`: 200 "Node found" or 404 "Node not found".
//!
//! Refusals are plain text that says what is wrong, and are logged with the node's name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Node;
use kedge_http::PeerCerts;
use kedge_pki::Ca;
use kedge_pki::token::JoinToken;
use kube::Api;

/// KubeEdge's limit on CSR bodies.
const MAX_CSR: usize = 1 << 20;

struct Join {
    ca: Arc<Ca>,
    nodes: Api<Node>,
    node_ttl: Duration,
}

/// The join server's routes; node certificates it signs are valid for `node_ttl`.
pub fn router(ca: Arc<Ca>, client: kube::Client, node_ttl: Duration) -> axum::Router {
    let state = Arc::new(Join {
        ca,
        nodes: Api::all(client),
        node_ttl,
    });
    axum::Router::new()
        .route("/ca.crt", get(ca_crt))
        .route("/edge.crt", get(edge_crt))
        .route("/node/{name}", get(node))
        .layer(DefaultBodyLimit::max(MAX_CSR))
        .with_state(state)
}

/// Starts the join server on `addr` with a serving certificate for `names`.
pub async fn start(
    addr: SocketAddr,
    ca: Arc<Ca>,
    client: kube::Client,
    names: &[String],
    node_ttl: Duration,
) -> Result<kedge_http::Listener, crate::CloudError> {
    let tls = ca.mtls_server_config("kedge-cloudhub", names, false)?;
    let l = kedge_http::Listener::bind(addr, tls, router(ca, client, node_ttl)).await?;
    tracing::info!(addr = %l.addr, "join server listening");
    Ok(l)
}

async fn ca_crt(State(j): State<Arc<Join>>) -> Response {
    let der = j.ca.cert_der().to_vec();
    ([("content-type", "application/pkix-cert")], der).into_response()
}

fn refuse(code: StatusCode, node: &str, why: String) -> Response {
    tracing::warn!(node, reason = %why, "join refused");
    (code, why).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let token = v.strip_prefix("Bearer ")?.trim();
    // Accept the whole join token or, as KubeEdge edges send it, only its JWT part.
    Some(JoinToken::parse(token).map_or(token, |t| t.jwt))
}

/// Whether the request may have a certificate for `node`: its current certificate for that node
/// (already verified against the CA, validity included, by the TLS handshake), or a valid token.
fn authorized(
    j: &Join,
    peer: &PeerCerts,
    headers: &HeaderMap,
    node: &str,
) -> Result<(), (StatusCode, String)> {
    let cert_node = peer.0.first().and_then(|c| kedge_pki::node::cert_node(c));
    match cert_node {
        Some(n) if n == node => return Ok(()),
        Some(n) => {
            let why = format!("the client certificate is for node {n:?}, not {node:?}");
            return Err((StatusCode::FORBIDDEN, why));
        }
        None => {}
    }
    let Some(jwt) = bearer(headers) else {
        let why = "an Authorization: Bearer <join token> header is required".to_string();
        return Err((StatusCode::UNAUTHORIZED, why));
    };
    j.ca.verify_jwt(jwt)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))
}

async fn edge_crt(
    State(j): State<Arc<Join>>,
    axum::Extension(peer): axum::Extension<PeerCerts>,
    headers: HeaderMap,
    csr: Bytes,
) -> Response {
    let node = headers
        .get("nodename")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !kedge_core::names::is_dns_subdomain(&node) {
        let why = format!("the NodeName header must be a valid node name, not {node:?}");
        return refuse(StatusCode::BAD_REQUEST, &node, why);
    }
    if let Err((code, why)) = authorized(&j, &peer, &headers, &node) {
        return refuse(code, &node, why);
    }
    match j.ca.sign_node_csr(&csr, &node, j.node_ttl) {
        Ok(cert) => {
            tracing::info!(node, "issued a node certificate");
            ([("content-type", "application/pkix-cert")], cert.to_vec()).into_response()
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, &node, e.to_string()),
    }
}

async fn node(State(j): State<Arc<Join>>, Path(name): Path<String>) -> Response {
    match j.nodes.get_opt(&name).await {
        Ok(Some(_)) => (StatusCode::OK, "Node found").into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "Node not found").into_response(),
        Err(e) => {
            tracing::error!(node = %name, error = %e, "node lookup failed");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}
