//! Byte streams for `kubectl logs/exec/attach/port-forward` to edge pods.
//!
//! - [`mux`]: many streams inside one hub session (binary WebSocket frames beside the session's
//!   JSON messages), each flow-controlled by credit, so a slow reader stalls only its own stream.
//!   The cloud opens streams; the edge accepts them, only over its authenticated session.
//! - [`request`]: what a stream asks the edge for, and the channel framing exec and attach use.
//! - [`spdy`]: SPDY/3.1, which containerd's streaming server, kubelets and older kubectls speak.

pub mod mux;
pub mod request;
pub mod spdy;

pub use mux::{Incoming, Mux, Reader, Stream, StreamError, Writer};
pub use request::StreamRequest;

/// Opens streams to nodes: the cloud's hub implements it, the API server uses it (neither
/// knows the other).
pub trait NodeStreams: Send + Sync + 'static {
    fn open(&self, node: &str, request: &StreamRequest) -> Result<Stream, OpenFailed>;
}

/// Why a stream to a node did not open, with the HTTP status the API answers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OpenFailed {
    pub code: u16,
    pub message: String,
}
