//! kedge's gRPC interfaces, generated at build time from the `.proto` files in `proto/` by
//! protox and tonic (no `protoc` needed).
//!
//! - [`cri`]: the Container Runtime Interface v1 (`runtime.v1`), Kubernetes' `api.proto`, which
//!   Edged speaks to containerd.
//! - [`dmi`]: KubeEdge's Device Management Interface v1beta1 (`package v1beta1`), which the
//!   edge serves to mappers (`DeviceManagerService`) and calls on them (`DeviceMapperService`).

/// CRI v1 (`package runtime.v1`): `RuntimeService` and `ImageService` clients and their messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

/// DMI v1beta1 (`package v1beta1`): both services, servers and clients, and their messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod dmi {
    tonic::include_proto!("v1beta1");
}
