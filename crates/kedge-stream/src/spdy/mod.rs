//! SPDY/3.1 as Kubernetes uses it (moby/spdystream): the framing, the zlib-compressed header
//! blocks with the protocol's dictionary, and a connection ([`conn`]) serving both roles — the
//! edge is a client of containerd's streaming server, the API server a server to kubectl's
//! port-forward (tunnelled in a WebSocket) and to kubectls too old for WebSockets.
//!
//! Like spdystream, there is no SPDY flow control: `WINDOW_UPDATE` is ignored and never sent;
//! TCP paces each connection, and a stream's reader that stops pauses its whole connection,
//! which serves one exec or one port-forward session.

pub mod conn;
pub mod frame;

pub use conn::{Conn, Role, SpdyStream};
pub use frame::{Codec, Frame, Headers, SpdyError};
