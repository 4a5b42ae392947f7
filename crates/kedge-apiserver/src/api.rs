//! The API's shared state: the store, what is served, the admin token. Requests reach it
//! through `dispatch`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;

use crate::registry::Registry;
use crate::store::Store;

/// Kubernetes' own limit on request bodies.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct Api {
    pub store: Arc<Store>,
    pub registry: Registry,
    token: String,
    pub(crate) server_address: String,
    /// Changes whenever the served resources do (OpenAPI cache key for kubectl).
    discovery_generation: AtomicU64,
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
    /// How `pods/log|exec|attach|portforward` reach nodes (the cloud sets it).
    streams: std::sync::OnceLock<Arc<dyn kedge_stream::NodeStreams>>,
}

impl Api {
    pub fn new(
        store: Arc<Store>,
        token: String,
        server_address: String,
        bookmark_interval: std::time::Duration,
    ) -> Api {
        Api {
            bookmark_interval,
            registry: Registry::default(),
            store,
            token,
            server_address,
            discovery_generation: AtomicU64::new(1),
            streams: std::sync::OnceLock::new(),
        }
    }

    /// Where streams to nodes are opened (once: the cloud serving this API).
    pub fn set_streams(&self, streams: Arc<dyn kedge_stream::NodeStreams>) {
        let _ = self.streams.set(streams);
    }

    pub(crate) fn streams(&self) -> Option<Arc<dyn kedge_stream::NodeStreams>> {
        self.streams.get().cloned()
    }

    pub fn bump_discovery(&self) {
        self.discovery_generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever the served resources do.
    pub(crate) fn discovery_generation(&self) -> u64 {
        self.discovery_generation.load(Ordering::Relaxed)
    }

    pub(crate) fn authorized(&self, req: &Request) -> bool {
        let Some(given) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.token.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
