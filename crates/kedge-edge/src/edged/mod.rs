//! Edged: the node itself and its pods. It reconciles the pods MetaManager stores for this
//! node with the container runtime (CRI): sandboxes and containers are created, restarted with
//! back-off and removed as the pods say, and each pod's status goes to the cloud through the
//! outbox (latest only, at least once). Everything it needs is in the edge's store, so pods keep
//! running, and are restarted, while the cloud is unreachable; after an edge restart the
//! running containers are adopted (found by their labels), not restarted.

pub mod cri;
pub mod env;
pub mod fetch;
pub mod lifecycle;
pub mod logs;
pub mod node;
pub mod nodestatus;
pub mod probe;
pub mod spec;
pub mod stats;
pub mod status;
pub mod streams;
mod sync;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

pub use sync::Pods;

/// The value of `--cri-endpoint` that turns Edged off (a node for devices and messages only).
pub const NO_RUNTIME: &str = "none";

#[derive(Debug, Clone)]
pub struct EdgedConfig {
    pub node: String,
    /// `unix:///…` socket of the CRI runtime, or `none`.
    pub endpoint: String,
    pub data_dir: PathBuf,
    /// The node's address (hostIP, and podIP of hostNetwork pods).
    pub host_ip: String,
    /// First CrashLoopBackOff delay (kubelet: 10 s); it doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often pods are reconciled when nothing wakes Edged earlier.
    pub resync: Duration,
}

/// What the node reports about its container runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// Edged is off (`--cri-endpoint none`): the node runs no pods.
    Disabled,
    /// Not asked yet.
    Unknown,
    /// Answering; `runtime://version` as nodeInfo shows it.
    Up {
        version: String,
    },
    Down {
        error: String,
    },
}

/// A handle on the running Edged.
#[derive(Clone)]
pub struct Edged {
    wake: Arc<Notify>,
    runtime: watch::Receiver<Runtime>,
    /// Keeps a disabled Edged's channel open (its readers would see it closed otherwise).
    _fixed: Option<Arc<watch::Sender<Runtime>>>,
}

impl Edged {
    /// Edged switched off: nothing runs, the node says so, and pods being deleted are
    /// confirmed at once (no container of theirs runs here).
    pub fn disabled(pods: Pods) -> Edged {
        let (tx, rx) = watch::channel(Runtime::Disabled);
        let wake = Arc::new(Notify::new());
        tokio::spawn(sync::confirm_deletions(pods, wake.clone()));
        Edged {
            wake,
            runtime: rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    /// Edged with the runtime at `cfg.endpoint`, or switched off when it is `none`.
    pub fn start_or_disable(cfg: EdgedConfig, pods: Pods) -> Result<Edged, cri::CriError> {
        if cfg.endpoint == NO_RUNTIME {
            tracing::info!("no container runtime (--cri-endpoint none): this node runs no pods");
            return Ok(Edged::disabled(pods));
        }
        Edged::start(cfg, pods)
    }

    /// Starts reconciling `pods` with the runtime at `cfg.endpoint`.
    pub fn start(cfg: EdgedConfig, pods: Pods) -> Result<Edged, cri::CriError> {
        let client = cri::Cri::new(&cfg.endpoint)?;
        let (tx, rx) = watch::channel(Runtime::Unknown);
        let wake = Arc::new(Notify::new());
        let sync = sync::Sync::new(cfg, client, pods, wake.clone());
        tokio::spawn(sync.run(tx));
        Ok(Edged {
            wake,
            runtime: rx,
            _fixed: None,
        })
    }

    /// Something Edged acts on changed (a pod, ConfigMap or Secret was stored).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn runtime(&self) -> watch::Receiver<Runtime> {
        self.runtime.clone()
    }
}
