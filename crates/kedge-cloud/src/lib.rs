//! kedge's cloud side. Modules are named as in KubeEdge: `cloudhub` (the join server and the
//! WebSocket hub the edges dial), `edgecontroller`, `devicecontroller`, `router`. Controllers
//! reach Kubernetes through kube-rs, so the embedded API and a real cluster are the same code
//! path — with one exception: node Lease renewals and sync records, which the embedded API
//! takes in bulk (`bulk`).

pub mod bulk;
pub mod cloudhub;
pub mod cloudstream;
pub mod config;
pub mod dashboard;

/// Errors starting the cloud.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Pki(#[from] kedge_pki::PkiError),
    #[error(transparent)]
    Bind(#[from] kedge_http::BindError),
    #[error("the cluster's CA: {0}")]
    PkiSecret(#[from] pkisecret::PkiSecretError),
}

pub mod devicecontroller;
pub mod edgeapplication;
pub mod edgecontroller;
pub mod leader;
pub mod nodegroup;
pub mod objects;
pub mod pkisecret;
pub mod placement;
pub mod replicas;
pub mod router;
pub mod workloads;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the cloud listens.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub data_dir: PathBuf,
    /// Address of the hub and join listeners (all interfaces by default: edges dial in).
    pub bind: IpAddr,
    pub hub_port: u16,
    pub https_port: u16,
    /// Names and addresses edges use to reach the cloud (certificate SANs).
    pub names: Vec<String>,
    pub hub: cloudhub::hub::HubConfig,
    pub lifecycle: edgecontroller::Lifecycle,
    /// Lifetime of the node certificates the join server signs (edges renew at 70–90 % of it).
    pub node_cert_ttl: std::time::Duration,
    /// The router's REST listener.
    pub router: router::rest::RouterConfig,
    /// Bulk writes (the embedded API); `None`: each Lease renewal and sync record is an API
    /// call.
    pub bulk: Option<Arc<dyn bulk::Bulk>>,
    /// Run the scheduler and the workload controllers (`workloads`): with the embedded API only
    /// (a real cluster has its own).
    pub workloads: bool,
    /// Serve the kubelet API for edge nodes (a real cluster's kube-apiserver calls it).
    pub cloudstream: Option<cloudstream::CloudStreamConfig>,
    /// Share the CA with other replicas through this Secret (a real cluster).
    pub pki_secret: Option<pkisecret::SecretRef>,
    /// Run as one of several replicas (a real cluster): elect a leader for cluster-wide work,
    /// claim the nodes this one holds, forward to the others; without it this cloud is the
    /// only one.
    pub replicas: Option<ReplicaConfig>,
}

/// How a replica is reached by the others.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The peer listener's port (on `bind`; 0 picks one).
    pub peer_port: u16,
    /// The name or address other replicas reach this one by; `None`: they cannot forward to it.
    pub peer_address: Option<String>,
}

/// A running cloud (hub, join server, controllers).
/// How long a stopping cloud waits for the edge messages being applied.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Cloud {
    pub hub: Arc<cloudhub::hub::Hub>,
    pub downstream: Arc<cloudhub::downstream::Downstream>,
    pub hub_addr: SocketAddr,
    pub join_addr: SocketAddr,
    pub router_addr: SocketAddr,
    /// CloudStream's listener and the endpoint edge Nodes advertise, when served.
    pub cloudstream: Option<(SocketAddr, cloudstream::Endpoint)>,
    /// This replica among several: its peer listener and how the others know it.
    pub replica: Option<(SocketAddr, replicas::Owner)>,
    pub ca: Arc<kedge_pki::Ca>,
    router: router::rest::Listener,
    edgecontroller: Arc<edgecontroller::Stats>,
    workers: Arc<edgecontroller::Workers>,
    listeners: Vec<kedge_http::Listener>,
}

impl Cloud {
    /// What `/metrics` reports about the cloud, read at each scrape.
    pub fn metrics(&self) -> kedge_http::metrics::Source {
        use kedge_http::metrics::Reading;
        use std::sync::atomic::Ordering::Relaxed;
        let (hub, downstream) = (self.hub.clone(), self.downstream.clone());
        let ec = self.edgecontroller.clone();
        Arc::new(move || {
            let mut r = vec![
                Reading::gauge(
                    "kedge_cloudhub_connected_nodes",
                    "Edge nodes with a live session.",
                    hub.connected().len() as u64,
                ),
                Reading::counter(
                    "kedge_cloudhub_sessions",
                    "Edge sessions accepted (reconnections included).",
                    hub.sessions_total(),
                ),
                Reading::counter(
                    "kedge_cloudhub_throttled_messages",
                    "Messages from nodes over their rate, read late.",
                    hub.throttled(),
                ),
                Reading::counter(
                    "kedge_cloudhub_refused_connections",
                    "Hub connections refused (identity or headers).",
                    hub.refused(),
                ),
            ];
            r.extend([
                Reading::counter(
                    "kedge_edgecontroller_refused_writes",
                    "Edge writes refused by node authorization.",
                    ec.refused.load(Relaxed),
                ),
                Reading::counter(
                    "kedge_edgecontroller_applied_messages",
                    "Edge messages applied and acknowledged.",
                    ec.applied.load(Relaxed),
                ),
            ]);
            r.extend(downstream.readings());
            r
        })
    }

    /// Stops accepting, closes every edge session, then lets the edge messages being applied
    /// finish (what is still queued stays unacknowledged: the edge sends it again).
    pub async fn shutdown(self) {
        self.router.shutdown();
        self.hub.close_all();
        for l in self.listeners {
            l.shutdown().await;
        }
        self.workers.quiesce(SHUTDOWN_GRACE).await;
    }
}

/// This replica among the others: its identity and its peer listener's socket, bound now so
/// that the address the records carry has its port.
fn replica(
    cfg: &CloudConfig,
    rc: &ReplicaConfig,
    ca: &kedge_pki::Ca,
    leader: tokio::sync::watch::Receiver<leader::Leadership>,
) -> Result<(Arc<replicas::Replicas>, std::net::TcpListener), CloudError> {
    let addr = SocketAddr::new(cfg.bind, rc.peer_port);
    let err = |cause| CloudError::Bind(kedge_http::BindError { addr, cause });
    let bound = std::net::TcpListener::bind(addr).map_err(err)?;
    let port = bound.local_addr().map_err(err)?.port();
    let peer = rc
        .peer_address
        .as_ref()
        .map(|h| kedge_core::hostport::join(h, port));
    if peer.is_none() {
        tracing::warn!(
            "no peer address (--peer-address or --advertise-address): other replicas cannot \
             forward router calls to the nodes this one holds"
        );
    }
    // CloudHub's port tells replicas on one machine apart; with a port picked at random (0),
    // the peer listener's does.
    let unique = if cfg.hub_port != 0 {
        cfg.hub_port
    } else {
        port
    };
    let me = replicas::Owner {
        id: leader::identity(unique),
        peer,
    };
    let client = replicas::peer::client(ca)?;
    Ok((Arc::new(replicas::Replicas::new(me, leader, client)), bound))
}

/// Starts CloudHub (join server and hub) and the controllers against `client`.
pub async fn start(cfg: CloudConfig, client: kube::Client) -> Result<Cloud, CloudError> {
    if let Some(at) = &cfg.pki_secret {
        let serving = pkisecret::adopt(&client, at, &cfg.data_dir).await?;
        pkisecret::follow(client.clone(), at.clone(), cfg.data_dir.clone(), serving);
    }
    let ca = Arc::new(kedge_pki::Ca::load_or_create(&cfg.data_dir)?);
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(cfg.names.iter().cloned());
    if !cfg.bind.is_unspecified() {
        names.push(cfg.bind.to_string());
    }
    names.dedup();
    let join = cloudhub::join::start(
        SocketAddr::new(cfg.bind, cfg.https_port),
        ca.clone(),
        client.clone(),
        &names,
        cfg.node_cert_ttl,
    )
    .await?;
    // The hub hands each node's events to its own worker; the controller is bound to the
    // workers before the hub accepts edges.
    let workers = edgecontroller::Workers::new();
    let hub = cloudhub::hub::Hub::new(cfg.hub.clone(), workers.clone());
    let downstream =
        cloudhub::downstream::Downstream::new(hub.clone(), client.clone(), cfg.bulk.clone());
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(leader::Leadership::default());
    let peer = match &cfg.replicas {
        Some(rc) => Some(replica(&cfg, rc, &ca, leader_rx)?),
        None => None,
    };
    let replicas = peer.as_ref().map(|(r, _)| r.clone());
    let rules = router::Rules::start(client.clone(), downstream.clone(), replicas.clone());
    let router = router::rest::start(
        cfg.router.clone(),
        rules.clone(),
        hub.clone(),
        replicas.clone(),
    )
    .await?;
    if cfg.workloads {
        workloads::start(client.clone());
    }
    // KubeEdge's own app controllers run in both modes.
    let gate = replicas::gate(replicas.as_ref());
    nodegroup::start(client.clone(), gate.clone());
    edgeapplication::start(client.clone(), gate);
    let join_addr = join.addr;
    let mut listeners = vec![join];
    let mut replica_served = None;
    if let Some((r, bound)) = peer {
        let mut peer_names = names.clone();
        peer_names.extend(
            r.me.peer
                .as_deref()
                .map(|p| kedge_core::hostport::host(p).to_string()),
        );
        let l = replicas::peer::start(
            bound,
            &ca,
            &peer_names,
            router.ctx.clone(),
            rules.stats.clone(),
            cfg.router.max_body,
        )?;
        replica_served = Some((l.addr, r.me.clone()));
        listeners.push(l);
    }
    let mut cs_served = None;
    if let Some(cs) = &cfg.cloudstream {
        let (l, ep) = cloudstream::start(cs, &ca, hub.clone(), client.clone()).await?;
        cs_served = Some((l.addr, ep));
        listeners.push(l);
    }
    let ec = edgecontroller::EdgeController::new(
        client.clone(),
        hub.clone(),
        downstream.clone(),
        rules,
        &workers,
        edgecontroller::Options {
            lifecycle: cfg.lifecycle.clone(),
            lease_writer: cfg.bulk.clone(),
            kubelet: cs_served.as_ref().map(|(_, ep)| ep.clone()),
            replicas: replicas.clone(),
        },
    );
    let hub_l = cloudhub::hub::start(
        SocketAddr::new(cfg.bind, cfg.hub_port),
        hub.clone(),
        &ca,
        &names,
    )
    .await?;
    let hub_addr = hub_l.addr;
    listeners.push(hub_l);
    if let Some(r) = &replicas {
        leader::spawn(client.clone(), r.me.clone(), leader_tx);
    }
    let stats = ec.stats();
    tokio::spawn(ec.run());
    Ok(Cloud {
        hub,
        downstream,
        hub_addr,
        join_addr,
        router_addr: router.addr,
        cloudstream: cs_served,
        replica: replica_served,
        router,
        ca,
        edgecontroller: stats,
        workers,
        listeners,
    })
}
