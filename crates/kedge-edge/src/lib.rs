//! kedge's edge side. Modules are named as in KubeEdge: `edgehub` (joining the cloud, the
//! WebSocket to CloudHub) and `edged` (the node; pods with issue #6); `metamanager`,
//! `devicetwin`, `eventbus` and `servicebus` follow.

pub mod config;
pub mod db;
pub mod devicetwin;
pub mod edged;
pub mod edgehub;
pub mod eventbus;
pub mod metamanager;
pub mod servicebus;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kedge_core::envelope::{Message, group, op};
use kedge_core::resource;
use tokio::sync::mpsc;

use edgehub::certificate::{Join, JoinError, identity_dir, load_or_join};
use edgehub::client::{self, EdgeHub};
use edgehub::outbox::Outbox;

#[derive(Clone)]
pub struct EdgeConfig {
    pub data_dir: PathBuf,
    pub node: String,
    /// The cloud's host name or address.
    pub cloud: String,
    pub hub_port: u16,
    pub https_port: u16,
    /// Join token; needed only until the edge holds a certificate.
    pub token: String,
    /// Keepalive period.
    pub heartbeat: Duration,
    /// How often the node's Lease is renewed (its status goes on change, or every 5 min).
    pub status_every: Duration,
    /// Port of `/metrics` and `/healthz` (served by the binary on loopback).
    pub metrics_port: u16,
    /// The MQTT broker devices and apps use.
    pub mqtt: Mqtt,
    /// The CRI runtime's socket, or `none` (no pods).
    pub cri_endpoint: String,
    /// First CrashLoopBackOff delay.
    pub restart_backoff: Duration,
}

/// Where the edge's MQTT broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mqtt {
    /// kedge's embedded broker, listening here (port 0 picks one).
    Embedded(std::net::SocketAddr),
    /// A broker the user runs (mosquitto, say).
    External(eventbus::BrokerAddr),
}

impl std::fmt::Debug for EdgeConfig {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.token.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("EdgeConfig")
            .field("data_dir", &self.data_dir)
            .field("node", &self.node)
            .field("cloud", &self.cloud)
            .field("hub_port", &self.hub_port)
            .field("https_port", &self.https_port)
            .field("token", &token)
            .field("heartbeat", &self.heartbeat)
            .field("status_every", &self.status_every)
            .field("metrics_port", &self.metrics_port)
            .field("mqtt", &self.mqtt_display())
            .field("cri_endpoint", &self.cri_endpoint)
            .field("restart_backoff", &self.restart_backoff)
            .finish()
    }
}

impl EdgeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, node: &str, cloud: &str, token: &str) -> EdgeConfig {
        EdgeConfig {
            data_dir: data_dir.into(),
            node: node.into(),
            cloud: cloud.into(),
            hub_port: 10000,
            https_port: 10002,
            token: token.into(),
            heartbeat: Duration::from_secs(15),
            status_every: Duration::from_secs(10),
            metrics_port: 10351,
            // Any free port: the command line and config file default to 1883.
            mqtt: Mqtt::Embedded(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            // Edged only where asked for: the command line and config file default to
            // containerd's socket.
            cri_endpoint: edged::NO_RUNTIME.into(),
            restart_backoff: Duration::from_secs(10),
        }
    }

    /// The broker, without its password.
    fn mqtt_display(&self) -> String {
        match &self.mqtt {
            Mqtt::Embedded(a) => format!("embedded on {a}"),
            Mqtt::External(b) => b.to_string(),
        }
    }

    fn server(&self, port: u16) -> String {
        if self.cloud.contains(':') && !self.cloud.starts_with('[') {
            format!("[{}]:{port}", self.cloud)
        } else {
            format!("{}:{port}", self.cloud)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("joining the cloud: {0}")]
    Join(#[from] JoinError),
    #[error("{0}")]
    Pki(#[from] kedge_pki::PkiError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Meta(#[from] metamanager::MetaError),
    #[error("{0}")]
    Outbox(#[from] edgehub::outbox::OutboxError),
    #[error("{0}")]
    Broker(#[from] kedge_broker::BindError),
    #[error("{0}")]
    MqttTls(#[from] eventbus::TlsError),
    #[error("{0}")]
    DeviceTwin(#[from] devicetwin::DeviceTwinError),
    #[error("{0}")]
    Cri(#[from] edged::cri::CriError),
    #[error(
        "{0} is in use by another kedge edge (it holds edge.lock there); stop it, or give this one its own --data-dir"
    )]
    Locked(PathBuf),
    #[error("edge database {path}: {cause}{hint}")]
    Db {
        path: PathBuf,
        cause: rusqlite::Error,
        /// What to do when the file is damaged.
        hint: &'static str,
    },
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// A running edge.
pub struct Edge {
    pub hub: EdgeHub,
    pub meta: std::sync::Arc<metamanager::MetaStore>,
    pub outbox: std::sync::Arc<edgehub::outbox::Outbox>,
    pub devicetwin: Arc<devicetwin::DeviceTwin>,
    pub bus: eventbus::EventBus,
    pub edged: edged::Edged,
    /// The runtime's CRI endpoint, or `none`.
    pub cri_endpoint: String,
    /// The broker devices use (the embedded one's actual port when 0 was asked).
    pub mqtt: eventbus::BrokerAddr,
    broker: Option<kedge_broker::Broker>,
    /// `<data-dir>/edge.lock`, held while the edge runs.
    _lock: std::fs::File,
}

/// Joins (once), connects to CloudHub, registers the node and keeps its status current.
pub async fn start(cfg: EdgeConfig) -> Result<Edge, EdgeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|cause| EdgeError::Io {
        path: cfg.data_dir.clone(),
        cause,
    })?;
    let lock = kedge_pki::lock_exclusive(&cfg.data_dir.join("edge.lock"))?
        .ok_or_else(|| EdgeError::Locked(cfg.data_dir.clone()))?;
    let join_server = format!("https://{}", cfg.server(cfg.https_port));
    let dir = identity_dir(&cfg.data_dir);
    let id = load_or_join(&Join {
        server: &join_server,
        node: &cfg.node,
        token: &cfg.token,
        dir: &dir,
    })
    .await?;
    let mut hcfg = client::HubConfig::new(cfg.server(cfg.hub_port), cfg.node.clone());
    hcfg.heartbeat = cfg.heartbeat;
    let (down_tx, down_rx) = mpsc::channel(1024);
    let path = cfg.data_dir.join("edge.db");
    let db = db::open(&path).map_err(|cause| EdgeError::Db {
        path: path.clone(),
        hint: db::damaged_hint(&cause),
        cause,
    })?;
    let meta = Arc::new(metamanager::MetaStore::open_in(db.clone())?);
    let outbox = Arc::new(Outbox::open_in(
        db.clone(),
        edgehub::outbox::DEFAULT_MAX_BYTES,
    )?);
    let hub = client::spawn(hcfg, id.clone(), down_tx)?;
    let (broker, mqtt) = start_broker(&cfg.mqtt).await?;
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let subscriptions = kedge_core::twin::topic::SUBSCRIPTIONS
        .map(String::from)
        .to_vec();
    let bus = eventbus::EventBus::start(
        &mqtt,
        &format!("kedge-edge-{}", cfg.node),
        subscriptions,
        in_tx,
    )?;
    bus.set_rule_topics(rule_topics(&meta));
    let devicetwin =
        devicetwin::DeviceTwin::open(&cfg.node, db, meta.clone(), bus.clone(), outbox.clone())?;
    tokio::spawn(run_devicetwin(
        devicetwin.clone(),
        bus.clone(),
        outbox.clone(),
        in_rx,
    ));
    let host_ip = edged::nodestatus::local_ip_towards(&cfg.server(cfg.hub_port));
    let edged = start_edged(&cfg, &host_ip, &meta, &outbox)?;
    let cri_endpoint = cfg.cri_endpoint.clone();
    tokio::spawn(keep_certificate(cfg.clone(), hub.clone(), id));
    tokio::spawn(report_node(
        cfg,
        host_ip,
        hub.clone(),
        outbox.clone(),
        edged.runtime(),
    ));
    tokio::spawn(pump(outbox.clone(), hub.clone()));
    tokio::spawn(store_then_ack(
        down_rx,
        meta.clone(),
        outbox.clone(),
        hub.clone(),
        devicetwin.clone(),
        bus.clone(),
        edged.clone(),
    ));
    Ok(Edge {
        hub,
        meta,
        outbox,
        devicetwin,
        bus,
        edged,
        cri_endpoint,
        mqtt,
        broker,
        _lock: lock,
    })
}

/// Edged, reconciling the stored pods with the runtime (unless switched off).
fn start_edged(
    cfg: &EdgeConfig,
    host_ip: &str,
    meta: &Arc<metamanager::MetaStore>,
    outbox: &Arc<Outbox>,
) -> Result<edged::Edged, EdgeError> {
    let pods = edged::Pods {
        meta: meta.clone(),
        outbox: outbox.clone(),
    };
    if cfg.cri_endpoint == edged::NO_RUNTIME {
        tracing::info!("no container runtime (--cri-endpoint none): this node runs no pods");
        return Ok(edged::Edged::disabled(pods));
    }
    let ecfg = edged::EdgedConfig {
        node: cfg.node.clone(),
        endpoint: cfg.cri_endpoint.clone(),
        data_dir: cfg.data_dir.clone(),
        host_ip: host_ip.into(),
        backoff_initial: cfg.restart_backoff,
        backoff_max: Duration::from_secs(300),
        resync: Duration::from_secs(2),
    };
    Ok(edged::Edged::start(ecfg, pods)?)
}

/// The embedded broker (when configured) and the address EventBus dials.
async fn start_broker(
    mqtt: &Mqtt,
) -> Result<(Option<kedge_broker::Broker>, eventbus::BrokerAddr), EdgeError> {
    match mqtt {
        Mqtt::External(b) => Ok((None, b.clone())),
        Mqtt::Embedded(addr) => {
            let cfg = kedge_broker::BrokerConfig {
                addr: *addr,
                ..Default::default()
            };
            let broker = kedge_broker::Broker::start(cfg).await?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            let dial = eventbus::BrokerAddr {
                host,
                port: broker.addr.port(),
                username: None,
                password: None,
                tls: false,
                ca: None,
            };
            Ok((Some(broker), dial))
        }
    }
}

/// Messages on eventbus→rest rules' topics: into the outbox in one commit (each kept until the
/// cloud has delivered it), then acknowledged to the broker.
///
/// A store that fails (disk full, outbox full) is retried until it succeeds, the messages held
/// unacknowledged meanwhile: nothing more is taken from the broker, whose publishers wait for
/// their PUBACK (and are disconnected unconfirmed if it takes too long), so a device is never
/// told "stored" of a message that was not.
async fn upload(outbox: &Outbox, bus: &eventbus::EventBus, burst: Vec<eventbus::Inbound>) {
    let burst = fit_the_channel(bus, burst).await;
    let msgs = |rest: &[eventbus::Inbound]| {
        rest.iter()
            .map(|m| {
                let content = kedge_core::rule::body_to_content(&m.payload);
                Message::new("bus", group::USER, op::UPLOAD, &m.topic, content)
            })
            .collect()
    };
    let mut delay = Duration::from_millis(100);
    let mut held = false;
    let mut done = 0;
    while done < burst.len() {
        // Stored: the first `n`. (One message always fits an empty outbox: the largest MQTT
        // packet is smaller than its bound, so this ends once the cloud drains it.)
        let why = match outbox.push_many(msgs(&burst[done..])) {
            Ok(0) => "the outbox or the disk is full".to_string(),
            Ok(n) => {
                for m in &burst[done..done + n] {
                    bus.ack(m).await;
                }
                done += n;
                delay = Duration::from_millis(100);
                continue;
            }
            Err(e) => e.to_string(),
        };
        if !held {
            tracing::warn!(messages = burst.len() - done, reason = %why, "messages for the cloud held back (not yet confirmed to their devices) until they can be stored");
            held = true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    if held {
        tracing::warn!("messages for the cloud stored again");
    }
}

/// Leaves out, with a warning, a message too large for the cloud–edge channel once encoded (a
/// binary body grows by a third in base64): stored, it would be re-sent and refused for ever,
/// holding up everything behind it. It is acknowledged all the same: left unacknowledged it
/// would hold one of the broker's in-flight places (an external broker's few) for good.
async fn fit_the_channel(
    bus: &eventbus::EventBus,
    burst: Vec<eventbus::Inbound>,
) -> Vec<eventbus::Inbound> {
    let mut fit = Vec::with_capacity(burst.len());
    for m in burst {
        // Encoding grows a body six times at most (JSON escapes): most need no encoding here.
        if m.payload.len() * 6 + m.topic.len() + 4096 <= kedge_core::envelope::MAX_FRAME {
            fit.push(m);
            continue;
        }
        let content = kedge_core::rule::body_to_content(&m.payload);
        let size = Message::new("bus", group::USER, op::UPLOAD, &m.topic, content)
            .encode()
            .len();
        if size > kedge_core::envelope::MAX_FRAME {
            tracing::warn!(topic = %m.topic, size, max = kedge_core::envelope::MAX_FRAME, "message too large for the cloud: not taken");
            bus.ack(&m).await;
        } else {
            fit.push(m);
        }
    }
    fit
}

/// At most this many MQTT messages are taken from the queue at once (one outbox commit).
const BURST: usize = 512;

/// DeviceTwin's MQTT loop; on every broker (re)connection the retained deltas are restored.
/// Messages for eventbus→rest rules that arrive together are stored together.
async fn run_devicetwin(
    dt: Arc<devicetwin::DeviceTwin>,
    bus: eventbus::EventBus,
    outbox: Arc<Outbox>,
    mut inbound: mpsc::UnboundedReceiver<eventbus::Inbound>,
) {
    let mut connected = bus.connected();
    loop {
        tokio::select! {
            m = inbound.recv() => {
                let Some(first) = m else { return };
                let mut burst = vec![first];
                while burst.len() < BURST && let Ok(m) = inbound.try_recv() {
                    burst.push(m);
                }
                let mut uploads = Vec::new();
                for m in burst {
                    if bus.is_rule_topic(&m.topic) {
                        uploads.push(m);
                        continue;
                    }
                    // Keep the order: uploads before this twin message go first.
                    if !uploads.is_empty() {
                        upload(&outbox, &bus, std::mem::take(&mut uploads)).await;
                    }
                    dt.on_mqtt(m).await;
                }
                if !uploads.is_empty() {
                    upload(&outbox, &bus, uploads).await;
                }
            },
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                if *connected.borrow_and_update() {
                    dt.republish_deltas().await;
                }
            }
        }
    }
}

/// Renews the node certificate at 70–90 % of its lifetime, for as long as the edge runs; a
/// failed renewal is retried with back-off (10 s → 10 min).
async fn keep_certificate(cfg: EdgeConfig, hub: EdgeHub, mut id: kedge_pki::node::Identity) {
    let join_server = format!("https://{}", cfg.server(cfg.https_port));
    let dir = identity_dir(&cfg.data_dir);
    let j = Join {
        server: &join_server,
        node: &cfg.node,
        token: &cfg.token,
        dir: &dir,
    };
    let mut retry = Duration::from_secs(10);
    loop {
        let validity = kedge_pki::node::cert_validity(&id.cert_der).unwrap_or((0, 0));
        let fraction = 0.7 + 0.2 * rand::random::<f64>();
        let now = jiff::Timestamp::now().as_second();
        tokio::time::sleep(edgehub::certificate::renewal_delay(validity, now, fraction)).await;
        match edgehub::certificate::renew(&j, &id).await {
            Ok(new) => {
                if let Err(e) = hub.use_identity(&new) {
                    tracing::error!(error = %e, "the renewed certificate cannot be used");
                }
                id = new;
                retry = Duration::from_secs(10);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "certificate renewal failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(600));
            }
        }
    }
}

impl Edge {
    /// What `/metrics` reports about the edge, read at each scrape.
    pub fn metrics(&self) -> kedge_http::metrics::Source {
        use kedge_http::metrics::Reading;
        let (hub, outbox) = (self.hub.clone(), self.outbox.clone());
        let dt = self.devicetwin.clone();
        let broker = self.broker.as_ref().map(|b| b.stats());
        let bus = self.bus.clone();
        let runtime = self.edged.runtime();
        Arc::new(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let mut r = vec![
                Reading::gauge(
                    "kedge_edge_connected",
                    "1 while connected to CloudHub.",
                    u64::from(*hub.connected().borrow()),
                ),
                Reading::gauge(
                    "kedge_edge_outbox_messages",
                    "Messages waiting for the cloud's ack.",
                    outbox.len() as u64,
                ),
                Reading::gauge(
                    "kedge_edge_outbox_bytes",
                    "Bytes waiting for the cloud's ack.",
                    outbox.bytes(),
                ),
                Reading::counter(
                    "kedge_edge_outbox_refused",
                    "Messages refused because the outbox was full.",
                    outbox.refused(),
                ),
                Reading::gauge(
                    "kedge_devicetwin_devices",
                    "Devices bound to this node.",
                    dt.device_ids().len() as u64,
                ),
                Reading::gauge(
                    "kedge_edged_runtime_up",
                    "1 while the container runtime answers (0 also when Edged is off).",
                    u64::from(matches!(*runtime.borrow(), edged::Runtime::Up { .. })),
                ),
                Reading::gauge(
                    "kedge_eventbus_connected",
                    "1 while EventBus is connected to the MQTT broker.",
                    u64::from(*bus.connected().borrow()),
                ),
            ];
            if let Some(b) = &broker {
                r.extend([
                    Reading::gauge(
                        "kedge_broker_clients",
                        "MQTT clients connected to the embedded broker.",
                        b.connected.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_received",
                        "MQTT messages published to the embedded broker.",
                        b.received.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_delivered",
                        "MQTT messages queued for subscribers.",
                        b.delivered.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_dropped",
                        "MQTT messages dropped for subscribers too slow to take them.",
                        b.dropped.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_unconfirmed",
                        "MQTT publishers disconnected unconfirmed: a subscriber did not acknowledge within 30 s.",
                        b.unconfirmed.load(Relaxed),
                    ),
                ]);
            }
            r
        })
    }
}

/// Sends what the outbox releases while connected; on a disconnect, unacked messages go back to
/// be sent first next time.
async fn pump(outbox: Arc<Outbox>, hub: EdgeHub) {
    let mut connected = hub.connected();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tick.tick() => {}
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*connected.borrow_and_update() {
                    outbox.disconnected();
                }
            }
        }
        if *connected.borrow() {
            for m in outbox.poll(kedge_core::clock::now_ms()) {
                hub.send(m).await;
            }
        }
    }
}

/// MetaManager's loop: every object change from the cloud is stored, then acknowledged; a
/// failure is answered with an `error` message (the cloud re-sends).
async fn store_then_ack(
    mut down: mpsc::Receiver<Message>,
    meta: std::sync::Arc<metamanager::MetaStore>,
    outbox: Arc<Outbox>,
    hub: EdgeHub,
    devicetwin: Arc<devicetwin::DeviceTwin>,
    bus: eventbus::EventBus,
    edged: edged::Edged,
) {
    let http = servicebus::client();
    let mut next = None;
    loop {
        let m = match next.take() {
            Some(m) => m,
            None => match down.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        if m.route.group == group::USER && m.route.operation == kedge_core::rule::OP_PUBLISH {
            hub.send(eventbus::publish_from_cloud(&bus, &m).await).await;
            continue;
        }
        if m.route.group == group::USER && kedge_core::servicebus::is_method(&m.route.operation) {
            // Calls run concurrently: a slow app must not hold up the store.
            let (http, hub) = (http.clone(), hub.clone());
            tokio::spawn(async move { hub.send(servicebus::call(&http, &m).await).await });
            continue;
        }
        // The cloud's answers to what the outbox sent: applied (response), or refused for good.
        // Answers that arrive together leave the outbox in one commit.
        if is_answer(&m) {
            let mut answers = vec![m];
            while answers.len() < BURST
                && let Ok(more) = down.try_recv()
            {
                if is_answer(&more) {
                    answers.push(more);
                } else {
                    next = Some(more);
                    break;
                }
            }
            for m in answers.iter().filter(|m| m.route.operation == op::ERROR) {
                tracing::warn!(resource = %m.route.resource, reason = %m.content, "the cloud refused a message");
            }
            let ids: Vec<&str> = answers
                .iter()
                .map(|m| m.header.parent_id.as_str())
                .collect();
            if let Err(e) = outbox.ack_many(&ids) {
                tracing::warn!(error = %e, "outbox");
            }
            continue;
        }
        if m.route.group != group::RESOURCE
            || !matches!(
                m.route.operation.as_str(),
                op::INSERT | op::UPDATE | op::PATCH | op::DELETE
            )
        {
            tracing::debug!(resource = %m.route.resource, operation = %m.route.operation, "not for MetaManager");
            continue;
        }
        let store = meta.clone();
        let msg = m.clone();
        let result = tokio::task::spawn_blocking(move || store.apply(&msg)).await;
        let reply = match result {
            Ok(Ok(applied)) => {
                to_devicetwin(&devicetwin, &m, applied).await;
                if m.route.resource.contains("/rule/") {
                    bus.set_rule_topics(rule_topics(&meta));
                }
                if ["/pod/", "/configmap/", "/secret/"]
                    .iter()
                    .any(|k| m.route.resource.contains(k))
                {
                    edged.wake();
                }
                m.ack()
            }
            Ok(Err(e)) => {
                tracing::warn!(resource = %m.route.resource, error = %e, "could not store a cloud message");
                m.error_reply(&e.to_string())
            }
            Err(e) => m.error_reply(&e.to_string()),
        };
        hub.send(reply).await;
    }
}

fn is_answer(m: &Message) -> bool {
    matches!(m.route.operation.as_str(), op::RESPONSE | op::ERROR)
}

/// The MQTT topics the stored eventbus→rest Rules name (`<namespace>/<topic>`); the cloud sends
/// a node only the rules whose eventbus source names it.
fn rule_topics(meta: &metamanager::MetaStore) -> std::collections::BTreeSet<String> {
    let keys = meta.keys("rule").unwrap_or_default();
    keys.iter()
        .filter_map(|k| {
            let rule = meta.get(k).ok().flatten()?;
            let ns = rule.pointer("/metadata/namespace")?.as_str()?;
            let topic = rule.pointer("/spec/sourceResource/topic")?.as_str()?;
            Some(format!("{ns}/{}", topic.trim_matches('/')))
        })
        .collect()
}

/// Devices and models go on to DeviceTwin once stored (and before the cloud is told).
async fn to_devicetwin(dt: &devicetwin::DeviceTwin, m: &Message, applied: metamanager::Applied) {
    let Ok(r) = resource::ObjectRef::parse(&m.route.resource) else {
        return;
    };
    if !matches!(r.kind, "device" | "devicemodel") {
        return;
    }
    match applied {
        metamanager::Applied::Stored => dt.on_object(r.kind, &m.content, false).await,
        metamanager::Applied::Deleted => dt.on_object(r.kind, &m.content, true).await,
        _ => {}
    }
}

fn push(outbox: &Outbox, m: Message, key: &str) {
    if let Err(e) = outbox.push(m, Some(key)) {
        tracing::warn!(error = %e, "node status not queued");
    }
}

/// Registers the node on every (re)connection; then, as kubelet does, renews its Lease every
/// `status_every` and sends its status only when it changed (the runtime came or went) or every
/// 5 minutes.
async fn report_node(
    cfg: EdgeConfig,
    ip: String,
    hub: EdgeHub,
    outbox: Arc<Outbox>,
    mut runtime: tokio::sync::watch::Receiver<edged::Runtime>,
) {
    use edged::nodestatus;
    let host = nodestatus::Host::read();
    let mut connected = hub.connected();
    let mut tick = tokio::time::interval(cfg.status_every);
    let mut last: Option<(serde_json::Value, u64)> = None;
    loop {
        let register = tokio::select! {
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                *connected.borrow_and_update()
            }
            _ = tick.tick() => false,
            changed = runtime.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        let rt = runtime.borrow_and_update().clone();
        let now = kedge_core::clock::rfc3339();
        let status = nodestatus::status(&ip, &host, &rt, &now);
        let now_ms = kedge_core::clock::now_ms();
        if register {
            let node = nodestatus::node(&cfg.node, &ip, &host, &rt, &now);
            let res = resource::object("", "node", &cfg.node);
            push(
                &outbox,
                Message::new("edged", group::RESOURCE, op::INSERT, &res, node),
                "node",
            );
            last = Some((status, now_ms));
        } else if !*connected.borrow() {
            continue;
        } else if nodestatus::needs_report(last.as_ref(), &status, now_ms) {
            let res = resource::object("", "nodestatus", &cfg.node);
            let m = Message::new("edged", group::RESOURCE, op::UPDATE, &res, status.clone());
            push(&outbox, m, "nodestatus");
            last = Some((status, now_ms));
        } else {
            let res = resource::object(edged::nodestatus::LEASE_NAMESPACE, "lease", &cfg.node);
            let m = Message::new(
                "edged",
                group::RESOURCE,
                op::UPDATE,
                &res,
                serde_json::json!({}),
            );
            push(&outbox, m, "lease");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_never_prints() {
        let cfg = super::EdgeConfig::new("d", "n", "c", "s3cr3t.token");
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }
}
