//! kedge's cloud side. Modules are named as in KubeEdge: `cloudhub` (the join server and, next,
//! the WebSocket hub the edges dial). Controllers reach Kubernetes only through kube-rs, so the
//! embedded API and a real cluster are the same code path.

pub mod cloudhub;

/// Errors starting the cloud.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{0}")]
    Pki(#[from] kedge_pki::PkiError),
    #[error("{0}")]
    Bind(#[from] kedge_http::BindError),
}
