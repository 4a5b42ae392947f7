//! The hub: the WebSocket the edges dial (`wss://<cloud>:10000/<project>/<node>/events`), with
//! mutual TLS. A connection is accepted only when the client certificate's CN is
//! `system:node:<node_id>` (KubeEdge leaves this check off by default; kedge always does it).
//! One session per node: a new connection replaces the old one. A session that sends nothing
//! (not even a keepalive) for the keepalive timeout is closed. A node sending faster than its
//! rate is read from more slowly (TCP back-pressure reaches the edge; nothing is dropped).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use kedge_core::dialect::{self, Dialect};
use kedge_core::envelope::{Message, op};
use kedge_core::throttle::TokenBucket;
use kedge_http::PeerCerts;
use kedge_stream::{Mux, Stream};
use tokio::sync::mpsc;

/// What CloudHub tells the controllers.
#[derive(Debug)]
pub enum HubEvent {
    Connected(String),
    Disconnected(String),
    /// A message from a node (its resource still in edge form).
    Message(String, Box<Message>),
}

/// Where CloudHub hands each node's events: one ordered queue per node, so that the controllers
/// can work on different nodes at once and a slow node holds up only its own queue (its
/// session stops reading, and TCP slows its edge down).
pub trait Events: Send + Sync + 'static {
    /// The queue of `node`'s events.
    fn queue(&self, node: &str) -> mpsc::Sender<HubEvent>;

    /// Takes `node`'s acknowledgement (a `response` to a message the cloud sent) at once,
    /// ahead of its queue, if it can: an ack is cheap, and one held up behind slow work would
    /// make the cloud re-send. False leaves it to the queue.
    fn acked(&self, _node: &str, _ack: &Message) -> bool {
        false
    }
}

/// Every node's events in one queue (tests, tools).
impl Events for mpsc::Sender<HubEvent> {
    fn queue(&self, _node: &str) -> mpsc::Sender<HubEvent> {
        self.clone()
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A session that sends nothing for this long is closed (KubeEdge: 30 s).
    pub keepalive_timeout: Duration,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// Messages queued for one node before senders wait.
    pub node_queue: usize,
    /// Messages per second one node may send before the hub reads from it more slowly
    /// (0: unlimited), and the burst allowed above that rate.
    pub node_rate: u32,
    pub node_burst: u32,
    /// Streams (`kubectl logs/exec/attach/port-forward`) open on one node at once.
    pub max_streams: usize,
    /// Stream bytes sent to one node per second (KiB/s, 0: unpaced).
    pub stream_rate_kib: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            keepalive_timeout: Duration::from_secs(30),
            max_frame: kedge_core::envelope::MAX_FRAME,
            node_queue: 1024,
            // Well above what one edge needs (eventbus→rest aims at 10,000 msg/s), low enough
            // that one runaway edge cannot take the controllers from the others.
            node_rate: 20_000,
            node_burst: 20_000,
            max_streams: kedge_stream::mux::DEFAULT_MAX_STREAMS,
            stream_rate_kib: kedge_stream::mux::DEFAULT_RATE_KIB,
        }
    }
}

struct Session {
    id: u64,
    tx: mpsc::Sender<Message>,
    dialect: Dialect,
    /// The session's streams (a stock edgecore speaks none).
    mux: Mux,
}

/// The hub's state: who is connected, and where node messages go.
pub struct Hub {
    cfg: HubConfig,
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
    events: Box<dyn Events>,
    refused: AtomicU64,
    throttled: AtomicU64,
    sessions_total: AtomicU64,
    /// Requests waiting for the edge's answer (by message id), with their node.
    pending: Mutex<HashMap<String, (String, tokio::sync::oneshot::Sender<Message>)>>,
    started: tokio::time::Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not connected")]
pub struct NotConnected(pub String);

/// Why a stream to an edge could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("node {0} is not connected to the cloud")]
    NotConnected(String),
    #[error(
        "node {0} runs KubeEdge's edgecore, which carries no streams over its hub session: logs, exec, attach and port-forward need kedge's edge"
    )]
    Unsupported(String),
    #[error("node {node}: {cause}")]
    Refused {
        node: String,
        cause: kedge_stream::StreamError,
    },
}

/// Why a request to an edge got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("node {0} is not connected")]
    NotConnected(String),
    #[error("node {0} disconnected before answering")]
    Disconnected(String),
    #[error("node {node} did not answer within {after:?}")]
    Timeout { node: String, after: Duration },
}

/// Removes a request's waiter however the request ends.
struct Waiting<'a>(&'a Hub, String);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.pending_map().remove(&self.1);
    }
}

impl Hub {
    pub fn new(cfg: HubConfig, events: impl Events) -> Arc<Hub> {
        Arc::new(Hub {
            cfg,
            sessions: Mutex::default(),
            next_id: AtomicU64::new(1),
            events: Box::new(events),
            refused: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            pending: Mutex::default(),
            started: tokio::time::Instant::now(),
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nodes with a live session.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sessions().keys().cloned().collect();
        v.sort();
        v
    }

    /// The dialect of `node`'s live session, if it has one.
    pub fn dialect(&self, node: &str) -> Option<Dialect> {
        self.sessions().get(node).map(|s| s.dialect)
    }

    /// Opens a stream to `node` asking for `request` (a `StreamRequest`, JSON).
    pub fn open_stream(&self, node: &str, request: &[u8]) -> Result<Stream, OpenError> {
        let mux = match self.sessions().get(node) {
            None => return Err(OpenError::NotConnected(node.into())),
            Some(s) if s.dialect.is_kubeedge() => {
                return Err(OpenError::Unsupported(node.into()));
            }
            Some(s) => s.mux.clone(),
        };
        mux.open(request).map_err(|cause| OpenError::Refused {
            node: node.into(),
            cause,
        })
    }

    /// Whether `node` has a live session.
    pub fn is_connected(&self, node: &str) -> bool {
        self.sessions().contains_key(node)
    }

    /// Connections refused (bad identity or headers) since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Sessions accepted since start (reconnections included).
    pub fn sessions_total(&self) -> u64 {
        self.sessions_total.load(Ordering::Relaxed)
    }

    /// Ends `node`'s session, if it has one (its Node was deleted).
    pub fn close(&self, node: &str) -> bool {
        self.sessions().remove(node).is_some()
    }

    /// Messages from flooding nodes that were held back by the throttle since start.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// A fresh throttle for one session.
    fn bucket(&self) -> TokenBucket {
        TokenBucket::new(
            self.cfg.node_rate,
            self.cfg.node_burst,
            self.started.elapsed(),
        )
    }

    /// Takes a token for one message from `node`; waits while the node is over its rate.
    async fn throttle(&self, node: &str, bucket: &mut TokenBucket, flooding: &mut bool) {
        match bucket.take(self.started.elapsed()) {
            None => *flooding = false,
            Some(wait) => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                if !*flooding {
                    *flooding = true;
                    tracing::warn!(
                        node,
                        rate = self.cfg.node_rate,
                        "node exceeds its message rate; reading from it more slowly"
                    );
                }
                tokio::time::sleep(wait).await;
            }
        }
    }

    fn pending_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, tokio::sync::oneshot::Sender<Message>)>>
    {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `msg` to `node` and waits for the message whose `parent_msg_id` is its id. Fails
    /// at once if the node is not connected, and as soon as its session ends.
    pub async fn request(
        &self,
        node: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = msg.header.id.clone();
        self.pending_map()
            .insert(id.clone(), (node.to_string(), tx));
        let _waiting = Waiting(self, id);
        self.send(node, msg)
            .await
            .map_err(|_| RequestError::NotConnected(node.into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RequestError::Disconnected(node.into())),
            Err(_) => Err(RequestError::Timeout {
                node: node.into(),
                after: timeout,
            }),
        }
    }

    /// Hands `msg` to the request waiting for it, if any; gives it back otherwise.
    fn answer(&self, node: &str, msg: Message) -> Option<Message> {
        if msg.header.parent_id.is_empty() {
            return Some(msg);
        }
        let mut pending = self.pending_map();
        match pending.get(&msg.header.parent_id) {
            Some((n, _)) if n == node => {}
            _ => return Some(msg),
        }
        let (_, tx) = pending.remove(&msg.header.parent_id)?;
        drop(pending);
        let _ = tx.send(msg);
        None
    }

    /// Room left in `node`'s send queue (0 when it is not connected).
    pub fn room(&self, node: &str) -> usize {
        self.sessions().get(node).map_or(0, |s| s.tx.capacity())
    }

    /// Queues `msg` for `node` without waiting: fails when the node is not connected or its
    /// queue is full (a writer serving many nodes must not wait on one).
    pub fn try_send(&self, node: &str, msg: Message) -> Result<(), NotConnected> {
        match self.sessions().get(node) {
            Some(s) => s.tx.try_send(msg).map_err(|_| NotConnected(node.into())),
            None => Err(NotConnected(node.into())),
        }
    }

    /// Queues `msg` for `node`.
    pub async fn send(&self, node: &str, msg: Message) -> Result<(), NotConnected> {
        let tx = self.sessions().get(node).map(|s| s.tx.clone());
        match tx {
            Some(tx) => tx.send(msg).await.map_err(|_| NotConnected(node.into())),
            None => Err(NotConnected(node.into())),
        }
    }

    fn register(&self, node: &str, tx: mpsc::Sender<Message>, dialect: Dialect, mux: Mux) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        // Replacing the old session drops its sender, which ends its writer and so the session.
        if self
            .sessions()
            .insert(
                node.into(),
                Session {
                    id,
                    tx,
                    dialect,
                    mux,
                },
            )
            .is_some()
        {
            tracing::info!(
                node,
                "a new connection replaces the node's previous session"
            );
        }
        id
    }

    /// Ends every session (shutdown): each one's writer sees its queue close and closes the socket.
    pub fn close_all(&self) {
        self.sessions().clear();
    }

    /// Removes the session `id` if it is still the node's current one.
    fn unregister(&self, node: &str, id: u64) -> bool {
        let mut sessions = self.sessions();
        if sessions.get(node).is_some_and(|s| s.id == id) {
            sessions.remove(node);
            drop(sessions);
            // Requests to the node fail now rather than at their timeout.
            self.pending_map().retain(|_, (n, _)| n != node);
            true
        } else {
            false
        }
    }

    fn refuse(&self, code: StatusCode, node: &str, why: String) -> Response {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node, reason = %why, "hub connection refused");
        (code, why).into_response()
    }
}

/// `kubectl logs/exec/attach/port-forward` reach edge pods through the nodes' sessions.
impl kedge_stream::NodeStreams for Hub {
    fn open(
        &self,
        node: &str,
        request: &kedge_stream::StreamRequest,
    ) -> Result<Stream, kedge_stream::OpenFailed> {
        self.open_stream(node, &request.encode()).map_err(|e| {
            let code = match e {
                OpenError::Refused {
                    cause: kedge_stream::StreamError::Frame(kedge_core::stream::StreamError::TooMany(_)),
                    ..
                } => 429,
                OpenError::Unsupported(_) => 501,
                _ => 503,
            };
            kedge_stream::OpenFailed {
                code,
                message: e.to_string(),
            }
        })
    }
}

/// The hub's routes: any path upgrades (KubeEdge ignores the path too).
pub fn router(hub: Arc<Hub>) -> axum::Router {
    axum::Router::new().fallback(upgrade).with_state(hub)
}

/// Starts the hub on `addr`.
pub async fn start(
    addr: SocketAddr,
    hub: Arc<Hub>,
    ca: &kedge_pki::Ca,
    names: &[String],
) -> Result<kedge_http::Listener, crate::CloudError> {
    let tls = ca.mtls_server_config("kedge-cloudhub", names, true)?;
    let l = kedge_http::Listener::bind(addr, tls, router(hub)).await?;
    tracing::info!(addr = %l.addr, "CloudHub listening");
    Ok(l)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    axum::Extension(peer): axum::Extension<PeerCerts>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let node = header(&headers, "node_id").to_string();
    let Ok(ws) = ws else {
        return hub.refuse(
            StatusCode::BAD_REQUEST,
            &node,
            "expected a WebSocket upgrade".into(),
        );
    };
    let cert_node = peer.0.first().and_then(|c| kedge_pki::node::cert_node(c));
    if node.is_empty() || cert_node.as_deref() != Some(node.as_str()) {
        let why = format!(
            "node_id {node:?} does not match the client certificate (CN for node {:?})",
            cert_node.unwrap_or_default()
        );
        return hub.refuse(StatusCode::FORBIDDEN, &node, why);
    }
    if header(&headers, "connectionuse") != "msg" {
        let why = "the ConnectionUse header must be \"msg\"".to_string();
        return hub.refuse(StatusCode::BAD_REQUEST, &node, why);
    }
    let max = hub.cfg.max_frame;
    let expires = peer
        .0
        .first()
        .and_then(|c| kedge_pki::node::cert_not_after(c));
    let dialect = Dialect::of(headers.get(dialect::HEADER).and_then(|v| v.to_str().ok()));
    // tungstenite reads through a 128 KiB buffer per connection by default: with thousands of
    // sessions that was most of the cloud's memory; messages are small, and bigger ones still
    // arrive whole (the buffer is only the read chunk).
    let mut answer = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| session(hub, node, socket, expires, dialect));
    answer.headers_mut().insert(
        dialect::HEADER,
        axum::http::HeaderValue::from_static(dialect::VERSION),
    );
    answer
}

/// Bytes read from a session's socket at a time.
pub const READ_BUFFER: usize = 8 * 1024;

/// When a certificate that expires at `not_after` (seconds since the epoch) runs out.
fn expiry(not_after: Option<i64>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let Some(not_after) = not_after else {
        return now;
    };
    // TLS verifiers treat a certificate as valid through the whole second of its notAfter;
    // the session ends when they would refuse it, so the edge cannot simply reconnect.
    let end = jiff::Timestamp::from_second(not_after.saturating_add(1)).unwrap_or_default();
    let left = end.duration_since(jiff::Timestamp::now());
    now + Duration::try_from(left).unwrap_or_default()
}

/// One edge's session. It ends, besides on errors, when the client certificate expires: TLS
/// checked it only at the handshake, and the edge renews before then and reconnects.
async fn session(
    hub: Arc<Hub>,
    node: String,
    socket: WebSocket,
    not_after: Option<i64>,
    dialect: Dialect,
) {
    let expires = expiry(not_after);
    let (tx, mut rx) = mpsc::channel(hub.cfg.node_queue);
    let events = hub.events.queue(&node);
    // Only the cloud opens streams; the edge answers them over this authenticated session.
    let (mux, mut stream_frames) =
        Mux::new(true, hub.cfg.max_streams, hub.cfg.stream_rate_kib, None);
    let id = hub.register(&node, tx, dialect, mux.clone());
    tracing::info!(node, ?dialect, "edge connected");
    let _ = events.send(HubEvent::Connected(node.clone())).await;
    let (mut sink, mut stream) = socket.split();
    // Both timers are created once and the silence timer is pushed back on each frame: a
    // timer per loop turn cost 10,000 idle sessions measurable CPU.
    let expired = tokio::time::sleep_until(expires);
    let silence = tokio::time::sleep(hub.cfg.keepalive_timeout);
    tokio::pin!(expired, silence);
    let (mut bucket, mut flooding) = (hub.bucket(), false);
    // A write that cannot complete within the keepalive timeout means a dead link (its socket
    // buffer is full): it must not hold the session, and what waits for it, for TCP's minutes.
    let write = hub.cfg.keepalive_timeout;
    let reason = loop {
        tokio::select! {
            // In this order: what arrived first (only silence counts as a dead link, as at the
            // edge), then messages to the edge before stream bytes, so a busy stream never delays
            // a delivery (streams are paced; messages are few and small).
            biased;
            _ = &mut expired => break "its client certificate expired".to_string(),
            frame = stream.next() => match frame {
                None => break "closed by the edge".to_string(),
                Some(Err(e)) => break format!("read failed: {e}"),
                Some(Ok(f)) => {
                    silence.as_mut().reset(tokio::time::Instant::now() + hub.cfg.keepalive_timeout);
                    let data: &[u8] = match &f {
                        Frame::Text(t) => t.as_bytes(),
                        // kedge's edges send messages as text, streams as binary frames.
                        Frame::Binary(b) if !dialect.is_kubeedge() => {
                            if let Err(e) = mux.receive(b) {
                                tracing::warn!(node, error = %e, "bad stream frame from edge");
                            }
                            continue;
                        }
                        Frame::Binary(b) => b,
                        Frame::Close(_) => break "closed by the edge".to_string(),
                        Frame::Ping(_) | Frame::Pong(_) => continue,
                    };
                    hub.throttle(&node, &mut bucket, &mut flooding).await;
                    if let Some(reply) = receive(&hub, &events, &node, data).await
                        && let Err(why) = send(&mut sink, Frame::Text(reply.encode().into()), write).await
                    {
                        break why;
                    }
                }
            },
            _ = &mut silence => break format!("nothing received for {:?}", hub.cfg.keepalive_timeout),
            out = rx.recv() => match out {
                Some(m) => if let Err(why) = send(&mut sink, Frame::Text(m.encode().into()), write).await {
                    break why;
                },
                None => break "replaced by a new connection, or the cloud is shutting down".to_string(),
            },
            Some(f) = stream_frames.recv() => if let Err(why) = send(&mut sink, Frame::Binary(f.into()), write).await {
                break why;
            },
        }
    };
    mux.end(&format!("node {node}'s session ended: {reason}"));
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    if hub.unregister(&node, id) {
        tracing::info!(node, reason, "edge disconnected");
        let _ = events.send(HubEvent::Disconnected(node)).await;
    }
}

/// Writes one frame to an edge within `limit`.
async fn send(
    sink: &mut futures::stream::SplitSink<WebSocket, Frame>,
    f: Frame,
    limit: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(limit, sink.send(f)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!("a write did not complete within {limit:?}")),
    }
}

/// Handles one frame from `node`; returns a reply to send back, if any.
async fn receive(
    hub: &Hub,
    events: &mpsc::Sender<HubEvent>,
    node: &str,
    data: &[u8],
) -> Option<Message> {
    let msg = match Message::decode(data, hub.cfg.max_frame) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(node, error = %e, "malformed frame from edge");
            let mut reply = Message::new("cloudhub", "", op::ERROR, "", e.to_string().into());
            reply.header.parent_id = String::new();
            return Some(reply);
        }
    };
    if msg.route.operation == op::KEEPALIVE {
        return None;
    }
    let msg = hub.answer(node, msg)?;
    if msg.route.operation == op::RESPONSE && hub.events.acked(node, &msg) {
        return None;
    }
    let _ = events
        .send(HubEvent::Message(node.into(), Box::new(msg)))
        .await;
    None
}
