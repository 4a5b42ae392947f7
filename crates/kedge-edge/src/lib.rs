//! kedge's edge side, laid out as KubeEdge's edgecore: each component owns its loop in its own
//! module, and this file declares them and starts them.
//!
//! - `edgehub`: joins the cloud, keeps the WebSocket to CloudHub, sends the outbox (edge→cloud
//!   messages, kept until acknowledged) and routes what the cloud sends by its parsed kind;
//! - `metamanager`: stores object changes from the cloud, tells the component that acts on each
//!   kind, then acknowledges;
//! - `devicetwin`: devices and their twins over KubeEdge's MQTT topics;
//! - `eventbus`: the MQTT client (and the embedded broker), eventbus→rest uploads and
//!   rest→eventbus publishes;
//! - `servicebus`: rest→servicebus calls to local apps;
//! - `edged`: the node's status and its pods over CRI.

pub mod config;
pub mod db;
pub mod devicetwin;
pub mod edged;
pub mod edgehub;
mod error;
pub mod eventbus;
pub mod metamanager;
mod metrics;
pub mod servicebus;

pub use config::{EdgeConfig, Mqtt};
pub use error::EdgeError;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use edgehub::certificate::{JoinWith, identity_dir, load_or_join};
use edgehub::client::EdgeHub;
use edgehub::outbox::Outbox;

/// How long devices wait at the embedded broker for the EventBus to subscribe (it connects over
/// loopback within milliseconds; past this something is broken and devices are let in anyway).
const BUS_FIRST_WAIT: Duration = Duration::from_secs(10);

/// A running edge.
pub struct Edge {
    pub hub: EdgeHub,
    pub meta: Arc<metamanager::MetaStore>,
    pub outbox: Arc<Outbox>,
    pub devicetwin: Arc<devicetwin::DeviceTwin>,
    pub dmi: Arc<devicetwin::dmi::Dmi>,
    /// Where mappers find the DMI server.
    pub dmi_socket: std::path::PathBuf,
    /// Dropped with the edge: the DMI server stops.
    _stop_dmi: tokio::sync::oneshot::Sender<()>,
    pub bus: eventbus::EventBus,
    pub edged: edged::Edged,
    /// The runtime's CRI endpoint, or `none`.
    pub cri_endpoint: String,
    /// The broker devices use (the embedded one's actual port when 0 was asked).
    pub mqtt: eventbus::BrokerAddr,
    /// Where apps call cloud apps (servicebus → rest).
    pub servicebus: std::net::SocketAddr,
    broker: Option<kedge_broker::Broker>,
    /// The components' loops.
    tasks: JoinSet<()>,
    /// `<data-dir>/edge.lock`, held while the edge runs.
    _lock: std::fs::File,
}

/// Joins (once), then starts every component.
pub async fn start(cfg: EdgeConfig) -> Result<Edge, EdgeError> {
    let lock = lock_data_dir(&cfg)?;
    let clouds = edgehub::servers::ordered_for(&cfg.node, cfg.clouds()?);
    let join = JoinWith {
        servers: clouds
            .iter()
            .map(|c| format!("https://{}", c.join(cfg.https_port)))
            .collect(),
        node: cfg.node.clone(),
        token: cfg.token.clone(),
        dir: identity_dir(&cfg.data_dir),
    };
    let id = join
        .first_reachable(|j| async move { load_or_join(&j).await })
        .await?;
    let db = open_db(&cfg)?;
    let meta = Arc::new(metamanager::MetaStore::open_in(db.clone())?);
    let outbox = Arc::new(Outbox::open_in(
        db.clone(),
        edgehub::outbox::DEFAULT_MAX_BYTES,
    )?);
    let client_id = format!("kedge-edge-{}", cfg.node);
    let (subscribed, open) = tokio::sync::watch::channel(false);
    let admission = kedge_broker::Admission {
        first: client_id.clone(),
        open,
        wait: BUS_FIRST_WAIT,
    };
    let (broker, mqtt) = eventbus::broker::start(&cfg.mqtt, admission).await?;
    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
    let subscriptions = kedge_core::twin::topic::SUBSCRIPTIONS.map(String::from);
    let bus = eventbus::EventBus::start(
        &mqtt,
        &client_id,
        subscriptions.to_vec(),
        eventbus::rule_topics(&meta),
        in_tx,
        subscribed,
    )?;
    let devicetwin = devicetwin::DeviceTwin::open(
        &cfg.node,
        db.clone(),
        meta.clone(),
        bus.clone(),
        outbox.clone(),
    )?;
    let dmi = devicetwin::dmi::Dmi::open(&cfg.node, db, meta.clone(), outbox.clone())?;
    let dmi_listener = devicetwin::dmi::server::bind(&cfg.dmi_socket)?;
    let servicebus_listener = servicebus::server::bind(cfg.servicebus).await?;
    let servicebus =
        servicebus_listener
            .local_addr()
            .map_err(|cause| servicebus::server::BindError {
                addr: cfg.servicebus,
                cause,
            })?;
    let missing = Arc::new(edged::fetch::Missing::default());
    let host_ip = edged::nodestatus::local_ip_towards(&clouds[0].hub());
    let edged = edged::Edged::start_or_disable(
        edged_config(&cfg, &host_ip),
        edged::Pods {
            meta: meta.clone(),
            outbox: outbox.clone(),
            missing: missing.clone(),
        },
    )?;

    let mut tasks = JoinSet::new();
    let (routes, inboxes) = edgehub::dispatch::inboxes();
    let (streams_tx, streams_rx) = tokio::sync::mpsc::channel(64);
    let hub_settings = edgehub::Settings {
        servers: clouds.iter().map(edgehub::servers::Cloud::hub).collect(),
        heartbeat: cfg.heartbeat,
        join,
        streams: Some(streams_tx),
    };
    let hub = edgehub::start(hub_settings, id, outbox.clone(), routes, &mut tasks)?;
    let stream_cri = (cfg.cri_endpoint != edged::NO_RUNTIME)
        .then(|| edged::cri::Cri::new(&cfg.cri_endpoint))
        .transpose()?;
    tasks.spawn(edged::streams::serve(
        streams_rx,
        stream_cri,
        cfg.data_dir.clone(),
    ));
    devicetwin.follow_cloud(hub.cloud());
    let (stop_dmi, dmi_stopped) = tokio::sync::oneshot::channel::<()>();
    tasks.spawn(devicetwin::dmi::server::serve(
        dmi_listener,
        dmi.clone(),
        devicetwin.clone(),
        async move {
            let _ = dmi_stopped.await;
        },
    ));
    tasks.spawn(devicetwin.clone().run());
    tasks.spawn(dmi.clone().run());
    let consumers = metamanager::Consumers {
        devicetwin: devicetwin.clone(),
        dmi: dmi.clone(),
        bus: bus.clone(),
        edged: edged.clone(),
    };
    tasks.spawn(metamanager::run(
        inboxes.objects,
        meta.clone(),
        hub.clone(),
        consumers,
    ));
    tasks.spawn(eventbus::inbound::run(
        bus.clone(),
        devicetwin.clone(),
        outbox.clone(),
        in_rx,
    ));
    tasks.spawn(eventbus::publish::run(
        inboxes.publishes,
        bus.clone(),
        hub.clone(),
    ));
    tasks.spawn(servicebus::run(inboxes.calls, hub.clone()));
    let woken = edged.clone();
    tasks.spawn(edged::fetch::run(
        missing,
        hub.clone(),
        meta.clone(),
        move || woken.wake(),
    ));
    let bus_server = servicebus::server::ServiceBus {
        meta: meta.clone(),
        hub: hub.clone(),
    };
    tasks.spawn(servicebus::server::serve(servicebus_listener, bus_server));
    let reporting = edged::node::Reporting {
        node: cfg.node.clone(),
        ip: host_ip,
        every: cfg.status_every,
    };
    tasks.spawn(edged::node::report(
        reporting,
        hub.clone(),
        outbox.clone(),
        edged.runtime(),
        inboxes.lease,
    ));
    Ok(Edge {
        dmi_socket: cfg.dmi_socket.clone(),
        _stop_dmi: stop_dmi,
        dmi,
        hub,
        meta,
        outbox,
        devicetwin,
        bus,
        edged,
        cri_endpoint: cfg.cri_endpoint.clone(),
        mqtt,
        servicebus,
        broker,
        tasks,
        _lock: lock,
    })
}

impl Edge {
    /// Stops the edge: leaves CloudHub (the cloud marks the node NotReady at once), disconnects
    /// from the broker, ends the components' loops, then stops the embedded broker. Pods keep
    /// running, as they do when kubelet stops; what waits in the outbox stays for next time.
    pub async fn shutdown(mut self) {
        self.hub.close().await;
        self.bus.stop().await;
        self.tasks.shutdown().await;
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
    }
}

/// `<data-dir>/edge.lock`: one edge per data directory.
fn lock_data_dir(cfg: &EdgeConfig) -> Result<std::fs::File, EdgeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|cause| EdgeError::Io {
        path: cfg.data_dir.clone(),
        cause,
    })?;
    kedge_pki::lock_exclusive(&cfg.data_dir.join("edge.lock"))?
        .ok_or_else(|| EdgeError::Locked(cfg.data_dir.clone()))
}

/// `<data-dir>/edge.db`, checked as it opens.
fn open_db(cfg: &EdgeConfig) -> Result<db::Db, EdgeError> {
    let path = cfg.data_dir.join("edge.db");
    db::open(&path).map_err(|cause| EdgeError::Db {
        hint: db::damaged_hint(&cause),
        path,
        cause,
    })
}

fn edged_config(cfg: &EdgeConfig, host_ip: &str) -> edged::EdgedConfig {
    edged::EdgedConfig {
        node: cfg.node.clone(),
        endpoint: cfg.cri_endpoint.clone(),
        data_dir: cfg.data_dir.clone(),
        host_ip: host_ip.into(),
        backoff_initial: cfg.restart_backoff,
        backoff_max: Duration::from_secs(300),
        resync: Duration::from_secs(2),
    }
}
