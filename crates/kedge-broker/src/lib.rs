//! kedge's embedded MQTT broker: MQTT 3.1.1 over TCP, QoS 0 and 1 (QoS 2 publishes are accepted
//! and delivered at QoS 1 at most), retained messages, last wills, `+`/`#` filters with the `$`
//! rule, client-id takeover, keepalive. Sessions are clean: a client reconnecting with
//! `clean_session=0` is told no session is present (CONNACK session-present 0).
//!
//! Why not an existing crate: rumqttd drops clients that subscribe to `$hw/...` (every KubeEdge
//! device topic), and rmqtt brings ~240 crates to an edge that must stay small (see
//! `docs/architecture.md`). The packet codec is rumqttc's, which the edge's client uses anyway.
//!
//! A subscriber that cannot keep up has a bounded queue (`client_queue`). A QoS 1 message that
//! does not fit waits (up to `full_wait`) for room, and the publisher's session reads nothing
//! more meanwhile, so a burst slows its publisher instead of losing data; past that wait, and at
//! once for QoS 0, the message is dropped for that subscriber, logged and counted, so one stuck
//! client cannot stall the others for long.
//!
//! A QoS 1 publish is acknowledged (PUBACK) only once every QoS 1 subscriber it went to has
//! acknowledged it or has gone. The edge acknowledges a device's message after storing it, so a
//! PUBACK the device holds means the edge's database has the message: a power loss of the edge
//! box between the two loses nothing the device let go of. Past `ack_wait` the publisher is
//! disconnected instead (counted): to an MQTT client that means "not delivered, send again".

mod router;
mod session;
pub mod topic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use router::{ClientKey, Retained, Router};

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen (loopback by default: devices on the same host).
    pub addr: SocketAddr,
    /// The largest packet accepted or sent.
    pub max_packet: usize,
    /// Messages queued for one subscriber before further ones are dropped for it.
    pub client_queue: usize,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// How long a QoS 1 message waits for room in a full subscriber queue before it is dropped.
    pub full_wait: Duration,
    /// Longest a publisher's PUBACK waits for the subscribers'; then the publisher is
    /// disconnected unconfirmed (a stuck subscriber holds its publishers up this long at most).
    pub ack_wait: Duration,
    /// Clients other than one wait for it to be ready before they are admitted (see
    /// [`Admission`]); `None`: everyone is admitted at once.
    pub admission: Option<Admission>,
}

/// Holds every client but `first` at CONNECT until `open` turns true, at most `wait`: the edge's
/// own EventBus connects first and opens it once its subscriptions are in place, so a device's
/// QoS 1 publish is never acknowledged while nobody is subscribed to carry it on (a message
/// sent the moment an edge restarts would be confirmed and lost).
#[derive(Debug, Clone)]
pub struct Admission {
    pub first: String,
    pub open: watch::Receiver<bool>,
    /// Past this a waiting client is admitted anyway (with a warning): a broken bus must not
    /// keep every device out.
    pub wait: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_packet: 16 << 20,
            client_queue: 10_000,
            connect_timeout: Duration::from_secs(10),
            full_wait: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            admission: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("MQTT broker cannot listen on {addr}: {cause}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    /// Publishers disconnected because a subscriber did not acknowledge within `ack_wait`.
    pub unconfirmed: AtomicU64,
}

/// Held by a QoS 1 delivery until its subscriber acknowledges it, or leaves (a clean session
/// gives up what it held). [`Receipt::fail`] when the broker drops the message for a subscriber
/// too slow to take it: the publisher's session then cannot confirm the publish.
#[derive(Debug)]
pub(crate) struct Receipt {
    failed: mpsc::Sender<()>,
}

impl Receipt {
    pub fn fail(self) {
        let _ = self.failed.try_send(());
    }
}

/// A publish's receipts: `recv` gives `Some` at the first failed one, `None` once all are gone.
pub(crate) type Settled = mpsc::Receiver<()>;

/// A message on its way to one subscriber.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// For a QoS 1 delivery of a QoS 1 publish.
    pub receipt: Option<Receipt>,
}

pub(crate) struct Client {
    pub tx: mpsc::Sender<Outgoing>,
    /// Closes the session (another connection took its client id).
    pub kick: Arc<tokio::sync::Notify>,
}

/// State shared by every session.
pub(crate) struct Shared {
    pub cfg: BrokerConfig,
    router: Mutex<Router>,
    clients: Mutex<HashMap<ClientKey, Client>>,
    ids: Mutex<HashMap<String, ClientKey>>,
    next: AtomicU64,
    pub stats: Arc<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn router(&self) -> MutexGuard<'_, Router> {
        lock(&self.router)
    }

    /// Registers a session under `client_id`, kicking the session that held it.
    pub fn register(&self, client_id: &str, client: Client) -> ClientKey {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.clients).insert(key, client);
        if let Some(old) = lock(&self.ids).insert(client_id.to_string(), key)
            && let Some(c) = lock(&self.clients).get(&old)
        {
            c.kick.notify_one();
        }
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        key
    }

    pub fn unregister(&self, client_id: &str, key: ClientKey) {
        lock(&self.clients).remove(&key);
        self.router().remove_client(key);
        let mut ids = lock(&self.ids);
        if ids.get(client_id) == Some(&key) {
            ids.remove(client_id);
        }
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// Routes a publish to its subscribers (and keeps it if retained). For QoS 1, what resolves
    /// once every QoS 1 subscriber has acknowledged it.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Option<Settled> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let targets = {
            let mut router = self.router();
            if retain {
                router.retain(topic, payload.clone(), qos.min(1));
            }
            router.route(topic)
        };
        if targets.is_empty() {
            return None;
        }
        let senders: Vec<(ClientKey, u8, mpsc::Sender<Outgoing>)> = {
            let clients = lock(&self.clients);
            targets
                .into_iter()
                .filter_map(|(key, q)| clients.get(&key).map(|c| (key, q, c.tx.clone())))
                .collect()
        };
        let (failed, settled) = mpsc::channel(1);
        for (key, sub_qos, tx) in senders {
            let qos = qos.min(sub_qos).min(1);
            let out = Outgoing {
                topic: topic.to_string(),
                payload: payload.clone(),
                qos,
                retain: false,
                receipt: (qos > 0).then(|| Receipt {
                    failed: failed.clone(),
                }),
            };
            self.deliver(key, &tx, out).await;
        }
        (qos > 0).then_some(settled)
    }

    /// Queues `out` for one client: a QoS 1 message waits up to `full_wait` for room; what
    /// cannot be queued is dropped for that client and counted.
    pub async fn deliver(&self, key: ClientKey, tx: &mpsc::Sender<Outgoing>, out: Outgoing) {
        let out = match tx.try_send(out) {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(out)) => out,
        };
        let topic = out.topic.clone();
        if out.qos > 0 {
            match tx.send_timeout(out, self.cfg.full_wait).await {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
                Err(mpsc::error::SendTimeoutError::Timeout(out)) => {
                    if let Some(r) = out.receipt {
                        r.fail();
                    }
                }
            }
        }
        let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() {
            tracing::warn!(client = key, %topic, dropped = n + 1, "MQTT subscriber too slow; messages dropped for it");
        }
    }
}

/// A running broker.
pub struct Broker {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    /// Binds `cfg.addr` (port 0 picks one) and serves until [`Broker::shutdown`].
    pub async fn start(cfg: BrokerConfig) -> Result<Broker, BindError> {
        let listener = TcpListener::bind(cfg.addr)
            .await
            .map_err(|cause| BindError {
                addr: cfg.addr,
                cause,
            })?;
        let addr = listener.local_addr().map_err(|cause| BindError {
            addr: cfg.addr,
            cause,
        })?;
        let shared = Arc::new(Shared {
            cfg,
            router: Mutex::default(),
            clients: Mutex::default(),
            ids: Mutex::default(),
            next: AtomicU64::new(1),
            stats: Arc::default(),
        });
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), rx));
        tracing::info!(%addr, "MQTT broker listening");
        Ok(Broker {
            addr,
            shared,
            shutdown,
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Stops accepting and closes every session.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        for c in lock(&self.shared.clients).values() {
            c.kick.notify_one();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(session::run(shared.clone(), tcp, peer, stop.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            cfg: BrokerConfig {
                full_wait: Duration::from_millis(10),
                ..BrokerConfig::default()
            },
            router: Mutex::default(),
            clients: Mutex::default(),
            ids: Mutex::default(),
            next: AtomicU64::new(1),
            stats: Arc::default(),
        }
    }

    fn message(receipt: Option<Receipt>) -> Outgoing {
        Outgoing {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
            qos: 1,
            retain: false,
            receipt,
        }
    }

    #[tokio::test]
    async fn a_message_dropped_for_a_slow_subscriber_fails_its_publish() {
        let s = shared();
        let (queue, mut taken) = mpsc::channel(1);
        s.deliver(1, &queue, message(None)).await;
        let (failed, mut settled) = mpsc::channel(1);
        let receipt = Receipt {
            failed: failed.clone(),
        };
        drop(failed);
        s.deliver(1, &queue, message(Some(receipt))).await;
        assert_eq!(
            settled.recv().await,
            Some(()),
            "the publish cannot be confirmed"
        );
        assert_eq!(s.stats.dropped.load(Ordering::Relaxed), 1);

        // Taken by the subscriber and acknowledged (or the subscriber left): settled.
        let (failed, mut settled) = mpsc::channel(1);
        let receipt = Receipt {
            failed: failed.clone(),
        };
        drop(failed);
        let _ = taken.recv().await;
        s.deliver(1, &queue, message(Some(receipt))).await;
        drop(taken.recv().await);
        assert_eq!(settled.recv().await, None);
    }
}
