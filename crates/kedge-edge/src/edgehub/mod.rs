//! EdgeHub: the edge's link to CloudHub. It joins the cloud once (`certificate`), keeps the
//! WebSocket up (`client`), sends what waits in the outbox (`outbox`, `pump`) and routes what
//! the cloud sends to the component that handles it (`dispatch`).

pub mod certificate;
pub mod client;
pub mod dispatch;
pub mod outbox;
mod pump;
pub mod servers;

use std::sync::Arc;
use std::time::Duration;

use kedge_pki::node::Identity;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use certificate::JoinWith;
use client::{EdgeHub, HubConfig};
use outbox::Outbox;

/// Where EdgeHub connects, and as whom.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port` of each CloudHub replica, in the order to try them.
    pub servers: Vec<String>,
    pub heartbeat: Duration,
    pub join: JoinWith,
    /// Where streams the cloud opens go (Edged's stream server).
    pub streams: Option<mpsc::Sender<kedge_stream::Incoming>>,
}

/// Starts EdgeHub's loops in `tasks`: the connection, the dispatch of what the cloud sends to
/// `routes`, the outbox pump and the certificate renewal.
pub fn start(
    s: Settings,
    id: Identity,
    outbox: Arc<Outbox>,
    routes: dispatch::Routes,
    tasks: &mut JoinSet<()>,
) -> Result<EdgeHub, kedge_pki::PkiError> {
    let mut cfg = HubConfig::new(String::new(), s.join.node.clone());
    cfg.servers = s.servers;
    cfg.heartbeat = s.heartbeat;
    cfg.streams = s.streams;
    let (down_tx, down_rx) = mpsc::channel(1024);
    let hub = client::spawn(cfg, id.clone(), down_tx)?.answered_by(routes.awaited.clone());
    tasks.spawn(dispatch::run(down_rx, routes, outbox.clone()));
    tasks.spawn(pump::run(outbox, hub.clone()));
    tasks.spawn(certificate::keep(s.join, hub.clone(), id));
    Ok(hub)
}
