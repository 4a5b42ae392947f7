//! The WebSocket to CloudHub: `wss://<cloud>:<hub-port>/<project>/<node>/events` with the node
//! certificate, headers `node_id`, `project_id`, `ConnectionUse: msg` and `kedge-version`, a
//! keepalive after each heartbeat period in which nothing else was sent (every period to a
//! stock cloudcore, which counts only keepalives: it names no dialect), and reconnection with jittered exponential
//! back-off (100 ms → 30 s) — not KubeEdge's fixed 30 s wait.
//!
//! A link that dies without a FIN or RST (a Wi-Fi or cellular hand-over that changes the edge's
//! address, a NAT that forgets the flow, a cloud host that loses power) is noticed by what the
//! edge stops hearing: the cloud answers every Lease renewal (every 10 s) and every WebSocket
//! ping at once, so after a heartbeat period without a frame from the cloud the edge pings, and
//! after `answer_wait` more without one it drops the connection and dials again — instead of
//! writing into its socket buffer until TCP gives up, some 15 minutes later (KubeEdge #6965).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{SinkExt, StreamExt};
use kedge_core::dialect::{self, Dialect};
use kedge_core::envelope::Message;
use kedge_pki::node::Identity;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message as Frame, client::IntoClientRequest};

/// KubeEdge's keepalive period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// KubeEdge's default project id.
pub const DEFAULT_PROJECT: &str = "e632aba927ea4ac2b575ec1603d56f10";

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `host:port` of each CloudHub replica, in the order to try them: a failed connection or a
    /// lost session moves to the next.
    pub servers: Vec<String>,
    pub node: String,
    pub project: String,
    /// Keepalive period (KubeEdge: 15 s); also how long the edge waits, hearing nothing from the
    /// cloud, before it pings.
    pub heartbeat: Duration,
    /// How long a ping may go unanswered (nor anything else heard) before the link counts as
    /// dead: the time a busy cloud gets to answer.
    pub answer_wait: Duration,
    pub max_frame: usize,
    /// The local address to connect from (default: the system's choice). The load tool gives
    /// each simulated edge its own, as real edges have.
    pub source: Option<std::net::IpAddr>,
    /// Where streams the cloud opens go (Edged's stream server); none: each is refused.
    pub streams: Option<mpsc::Sender<kedge_stream::Incoming>>,
}

impl HubConfig {
    pub fn new(server: impl Into<String>, node: impl Into<String>) -> HubConfig {
        HubConfig {
            servers: vec![server.into()],
            node: node.into(),
            project: DEFAULT_PROJECT.into(),
            heartbeat: DEFAULT_HEARTBEAT,
            answer_wait: Duration::from_secs(10),
            max_frame: kedge_core::envelope::MAX_FRAME,
            source: None,
            streams: None,
        }
    }
}

/// Talks to the running EdgeHub.
#[derive(Clone)]
pub struct EdgeHub {
    up: mpsc::Sender<Message>,
    connected: watch::Receiver<bool>,
    cloud: watch::Receiver<Dialect>,
    tls: Arc<watch::Sender<Arc<rustls::ClientConfig>>>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Where the dispatch hands the answers `request` waits for.
    awaited: Arc<super::dispatch::Awaited>,
}

impl EdgeHub {
    /// Queues a message for the cloud; it is sent once connected.
    pub async fn send(&self, msg: Message) -> bool {
        self.up.send(msg).await.is_ok()
    }

    /// Sends `msg` and waits up to `within` for the cloud's answer to it (a query, a
    /// servicebus call): `None` if none comes. Nothing is kept for later: the caller waits.
    pub async fn request(&self, msg: Message, within: Duration) -> Option<Message> {
        let answer = self.awaited.expect(&msg.header.id);
        if !self.send(msg).await {
            return None;
        }
        answer.within(within).await
    }

    /// This hub's `request`s take their answers from `awaited` (the dispatch's).
    pub fn answered_by(mut self, awaited: Arc<super::dispatch::Awaited>) -> EdgeHub {
        self.awaited = awaited;
        self
    }

    /// Switches to a renewed identity: the session reconnects with it at once.
    pub fn use_identity(&self, id: &Identity) -> Result<(), kedge_pki::PkiError> {
        self.tls.send_replace(Arc::new(id.client_config()?));
        Ok(())
    }

    /// Changes whenever the connection comes up or goes down.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// The dialect of the cloud last connected to (kedge until one answered otherwise).
    pub fn cloud(&self) -> watch::Receiver<Dialect> {
        self.cloud.clone()
    }

    /// Closes the session (a WebSocket close, which the cloud takes as the edge leaving) and
    /// stops reconnecting; waits, briefly, for the close to be sent.
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// Why a session ended.
enum Ended {
    /// The edge is stopping.
    Stopped,
    /// A renewed certificate is to be used.
    Renewed,
    /// The link failed or the cloud closed it.
    Lost(String),
}

/// Waits between connection attempts: from 0.1 s, doubling, to 5 s, each with up to as much
/// again at random (so at most 10 s). A cloud that restarts has its fleet back within seconds of
/// listening again; while it is down, each attempt costs it one refused SYN, and its bounded
/// handshakes pace the storm when it is up.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Starts EdgeHub: it connects, reconnects, and delivers cloud messages to `down`.
pub fn spawn(
    cfg: HubConfig,
    id: Identity,
    down: mpsc::Sender<Message>,
) -> Result<EdgeHub, kedge_pki::PkiError> {
    let (tls_tx, tls_rx) = watch::channel(Arc::new(id.client_config()?));
    let (up_tx, up_rx) = mpsc::channel(1024);
    let (conn_tx, conn_rx) = watch::channel(false);
    let (cloud_tx, cloud_rx) = watch::channel(Dialect::Kedge);
    let (stop_tx, stop_rx) = watch::channel(false);
    let link = Link {
        cfg,
        tls: tls_rx,
        up: up_rx,
        down,
        connected: conn_tx,
        cloud: cloud_tx,
        stop: stop_rx,
    };
    let task = tokio::spawn(link.run());
    Ok(EdgeHub {
        up: up_tx,
        connected: conn_rx,
        cloud: cloud_rx,
        tls: Arc::new(tls_tx),
        stop: Arc::new(stop_tx),
        task: Arc::new(std::sync::Mutex::new(Some(task))),
        awaited: Arc::default(),
    })
}

/// What the connection loop owns.
struct Link {
    cfg: HubConfig,
    tls: watch::Receiver<Arc<rustls::ClientConfig>>,
    up: mpsc::Receiver<Message>,
    down: mpsc::Sender<Message>,
    connected: watch::Sender<bool>,
    cloud: watch::Sender<Dialect>,
    stop: watch::Receiver<bool>,
}

impl Link {
    /// Connects and reconnects until the edge stops.
    async fn run(mut self) {
        let mut delays = backoff();
        let mut at = 0;
        while !*self.stop.borrow() {
            let tls = self.tls.borrow_and_update().clone();
            let Some(server) = self
                .cfg
                .servers
                .get(at % self.cfg.servers.len().max(1))
                .cloned()
            else {
                tracing::error!("EdgeHub has no CloudHub address to connect to");
                return;
            };
            let dialled = tokio::select! {
                c = connect(&self.cfg, &server, tls) => c,
                _ = self.stop.changed() => return,
            };
            match dialled {
                Ok((ws, dialect)) => {
                    delays = backoff();
                    tracing::info!(%server, node = %self.cfg.node, ?dialect, "connected to CloudHub");
                    self.cloud.send_replace(dialect);
                    self.connected.send_replace(true);
                    let ended = self.session(ws, dialect).await;
                    self.connected.send_replace(false);
                    match ended {
                        Ended::Stopped => {
                            tracing::info!("disconnected from CloudHub: the edge is stopping");
                            return;
                        }
                        Ended::Renewed => tracing::info!(
                            "the certificate was renewed; reconnecting to CloudHub with it"
                        ),
                        Ended::Lost(why) => {
                            tracing::warn!(%server, reason = %why, "disconnected from CloudHub");
                            at += 1;
                        }
                    }
                    if self.down.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%server, error = %e, "cannot connect to CloudHub");
                    at += 1;
                }
            }
            let wait = delays.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    /// One connected session.
    async fn session(&mut self, ws: Ws, cloud: Dialect) -> Ended {
        let (mut sink, mut stream) = ws.split();
        // Streams come only over this authenticated session, and only from kedge's cloud.
        let (mux, mut stream_frames) = kedge_stream::Mux::new(
            false,
            kedge_stream::mux::DEFAULT_MAX_STREAMS,
            kedge_stream::mux::DEFAULT_RATE_KIB,
            self.cfg.streams.clone().filter(|_| !cloud.is_kubeedge()),
        );
        let ended = self
            .serve(&mut sink, &mut stream, &mux, &mut stream_frames, cloud)
            .await;
        mux.end(&match &ended {
            Ended::Lost(why) => format!("the edge lost its cloud session: {why}"),
            _ => "the edge's cloud session ended".to_string(),
        });
        ended
    }

    async fn serve(
        &mut self,
        sink: &mut Sink,
        stream: &mut futures::stream::SplitStream<Ws>,
        mux: &kedge_stream::Mux,
        stream_frames: &mut mpsc::UnboundedReceiver<Vec<u8>>,
        cloud: Dialect,
    ) -> Ended {
        let cfg = &self.cfg;
        let mut keepalive = tokio::time::interval(cfg.heartbeat);
        // Writes are bounded too: a dead link fills the socket buffer, then blocks.
        let write_limit = cfg.heartbeat + cfg.answer_wait;
        // Nothing heard for a heartbeat: ping; nothing heard `answer_wait` after that: dead.
        let quiet = tokio::time::sleep(cfg.heartbeat);
        tokio::pin!(quiet);
        let mut pinged = false;
        loop {
            tokio::select! {
                // What arrived is read first: only a link that stays silent counts as dead.
                biased;
                f = stream.next() => {
                    quiet.as_mut().reset(tokio::time::Instant::now() + cfg.heartbeat);
                    pinged = false;
                    match f {
                        None => return Ended::Lost("closed by the cloud".into()),
                        Some(Err(e)) => return Ended::Lost(format!("read failed: {e}")),
                        Some(Ok(Frame::Text(t))) => deliver(cfg, t.as_bytes(), &self.down).await,
                        Some(Ok(Frame::Binary(b))) if !cloud.is_kubeedge() => {
                            if let Err(e) = mux.receive(&b) {
                                tracing::warn!(error = %e, "bad stream frame from the cloud");
                            }
                        }
                        Some(Ok(Frame::Binary(b))) => deliver(cfg, &b, &self.down).await,
                        Some(Ok(Frame::Close(_))) => return Ended::Lost("closed by the cloud".into()),
                        Some(Ok(_)) => {}
                    }
                }
                _ = self.stop.changed() => {
                    let _ = send(sink, Frame::Close(None), Duration::from_secs(1)).await;
                    return Ended::Stopped;
                }
                Ok(()) = self.tls.changed() => {
                    let _ = send(sink, Frame::Close(None), Duration::from_secs(1)).await;
                    return Ended::Renewed;
                }
                _ = &mut quiet => {
                    if pinged {
                        return Ended::Lost(format!(
                            "nothing heard from the cloud for {:?}, a ping unanswered: the link is dead",
                            cfg.heartbeat + cfg.answer_wait
                        ));
                    }
                    if let Err(why) = send(sink, Frame::Ping(Default::default()), write_limit).await {
                        return Ended::Lost(why);
                    }
                    pinged = true;
                    quiet.as_mut().reset(tokio::time::Instant::now() + cfg.answer_wait);
                }
                _ = keepalive.tick() => {
                    let k = Frame::Text(Message::keepalive().encode().into());
                    if let Err(why) = send(sink, k, write_limit).await {
                        return Ended::Lost(format!("keepalive: {why}"));
                    }
                }
                // Messages before stream bytes: a busy stream must not delay a twin report or a
                // status (streams are paced; messages are few and small).
                m = self.up.recv() => match m {
                    Some(m) => {
                        if let Err(why) = send(sink, Frame::Text(m.encode().into()), write_limit).await {
                            return Ended::Lost(why);
                        }
                        // Any frame tells kedge's cloud the edge is alive: a keepalive is due
                        // only after a silent period (an edge renewing its Lease every 10 s
                        // sends none, which at 10,000 nodes spares the cloud 667 frames a
                        // second). cloudcore counts only keepalives, so it gets them always.
                        if !cloud.is_kubeedge() {
                            keepalive.reset();
                        }
                    }
                    None => return Ended::Stopped,
                },
                Some(f) = stream_frames.recv() => {
                    if let Err(why) = send(sink, Frame::Binary(f.into()), write_limit).await {
                        return Ended::Lost(why);
                    }
                }
            }
        }
    }
}

type Sink = futures::stream::SplitSink<Ws, Frame>;

/// Writes a frame within `limit`.
async fn send(sink: &mut Sink, frame: Frame, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err("a write to the cloud did not complete: the link is dead".into()),
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP: {0}")]
    Tcp(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("bad server address {0:?}")]
    Address(String),
}

/// A TCP connection to CloudHub at `server`, from `cfg.source` when given.
async fn dial(cfg: &HubConfig, server: &str) -> std::io::Result<TcpStream> {
    let Some(source) = cfg.source else {
        return TcpStream::connect(server).await;
    };
    let to = tokio::net::lookup_host(server)
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| std::io::Error::other("no address of the server's family"))?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

async fn connect(
    cfg: &HubConfig,
    server: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(Ws, Dialect), ConnectError> {
    let host = server
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .ok_or_else(|| ConnectError::Address(server.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|_| ConnectError::Address(server.to_string()))?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), dial(cfg, server))
        .await
        .map_err(|_| ConnectError::Tcp(std::io::ErrorKind::TimedOut.into()))?
        .map_err(ConnectError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    // A cloud that accepted the connection but never answers (overloaded, or the path died)
    // must not hold the edge: the handshakes are bounded too.
    tokio::time::timeout(HANDSHAKE_WAIT, upgrade(cfg, server, name, tls, tcp))
        .await
        .map_err(|_| ConnectError::Tcp(std::io::ErrorKind::TimedOut.into()))?
}

/// How long the TLS handshake and the WebSocket upgrade may take together.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(20);

/// TLS, then the WebSocket upgrade with KubeEdge's headers.
async fn upgrade(
    cfg: &HubConfig,
    server: &str,
    name: rustls::pki_types::ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<(Ws, Dialect), ConnectError> {
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    let url = format!("wss://{server}/{}/{}/events", cfg.project, cfg.node);
    let mut req = url.into_client_request()?;
    let h = req.headers_mut();
    for (k, v) in [
        ("node_id", cfg.node.as_str()),
        ("project_id", cfg.project.as_str()),
        ("ConnectionUse", "msg"),
        (dialect::HEADER, dialect::VERSION),
    ] {
        h.insert(
            k,
            v.parse()
                .map_err(|_| ConnectError::Address(v.to_string()))?,
        );
    }
    // One session per edge, but the hollow-edge load tool runs thousands: read in 8 KiB
    // chunks, not tungstenite's 128 KiB default.
    let ws_cfg = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(cfg.max_frame))
        .max_frame_size(Some(cfg.max_frame));
    let (ws, answer) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(ws_cfg)).await?;
    let cloud = answer.headers().get(dialect::HEADER);
    Ok((ws, Dialect::of(cloud.and_then(|v| v.to_str().ok()))))
}

async fn deliver(cfg: &HubConfig, data: &[u8], down: &mpsc::Sender<Message>) {
    match Message::decode(data, cfg.max_frame) {
        Ok(m) => {
            let _ = down.send(m).await;
        }
        Err(e) => tracing::warn!(error = %e, "malformed frame from CloudHub"),
    }
}
