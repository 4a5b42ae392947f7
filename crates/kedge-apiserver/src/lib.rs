//! kedge's embedded Kubernetes-compatible API server.
//!
//! `kubectl` and kube-rs use it unchanged: discovery and OpenAPI v3 (`discovery`), get / list /
//! watch / create / update / patch / delete with the semantics of kube-apiserver (`handlers`,
//! `watch`, `meta`, `patch`), CRD schema validation (`schema`), `Table` output (`table`), and
//! `Status` errors (`error`). Objects live in SQLite with one revision counter that is the
//! `resourceVersion` (`store`). `server` starts it all behind TLS from the cloud CA with an admin
//! bearer token, and writes a kubeconfig.
//!
//! The pure parts (selectors, patches, schema validation, tables, URL parsing) are unit-tested
//! without sockets; `tests/` drive the real server with kube-rs.

mod api;
mod bootstrap;
mod call;
mod defaults;
mod discovery;
mod dispatch;
mod error;
mod gc;
mod graceful;
mod handlers;
mod leases;
mod meta;
mod metrics;
mod patch;
pub mod podstreams;
mod protobuf;
mod registry;
mod request;
mod scale;
mod schema;
mod selectors;
mod server;
mod store;
mod syncs;
mod table;
mod watch;
mod workload_table;
mod workloads;

pub use api::{Api, MAX_BODY};
pub use bootstrap::BUILTIN_CRDS;
pub use error::ApiError;
pub use server::{ApiServer, Config, ServerError, start};
pub use store::{Store, StoreError};
