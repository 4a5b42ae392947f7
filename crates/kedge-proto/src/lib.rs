//! kedge's gRPC interfaces, generated at build time from the `.proto` files in `proto/` by
//! protox and tonic (no `protoc` needed).
//!
//! - [`cri`]: the Container Runtime Interface v1 (`runtime.v1`), Kubernetes' `api.proto`, which
//!   Edged speaks to containerd.

/// CRI v1 (`package runtime.v1`): `RuntimeService` and `ImageService` clients and their messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}
