//! EventBus: the edge's MQTT client (QoS 1, clean session, reconnect with back-off), to the
//! embedded broker or to an external one (`mqtt[s]://[user:password@]host:port`; with `mqtts`,
//! TLS verified against a given CA file or the system's roots). Subscriptions are
//! renewed on every connection. Inbound QoS 1 messages are acknowledged by the consumer once it
//! has stored what they carry (manual acks), so a device's report is never lost between the
//! broker and the edge's database.
//!
//! The MQTT event loop never waits on the consumer: it hands messages over an unbounded channel.
//! (Waiting there while the consumer waits to publish through the same loop deadlocks under
//! load.) The broker's in-flight limit bounds that channel: QoS 1 messages stop coming until the
//! consumer acknowledges; QoS 0 messages beyond `MAX_QUEUED` are dropped and counted.

pub mod broker;
pub mod inbound;
pub mod publish;

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};

use crate::metamanager::MetaStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// PEM CA certificates to verify the broker with (default: the system's roots).
    pub ca: Option<std::path::PathBuf>,
}

impl std::fmt::Display for BrokerAddr {
    // Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match &self.username {
            Some(u) => write!(f, "{scheme}://{u}@{}:{}", self.host, self.port),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("MQTT broker URL {url:?}: {why}")]
pub struct UrlError {
    pub url: String,
    pub why: &'static str,
}

/// Parses `mqtt://[user[:password]@]host[:port]` (`tcp://` too; port 1883 by default) and
/// `mqtts://…` (`ssl://` too; TLS, port 8883 by default).
pub fn parse_url(url: &str) -> Result<BrokerAddr, UrlError> {
    let err = |why| UrlError {
        url: url.to_string(),
        why,
    };
    let (tls, rest) = if let Some(r) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (false, r)
    } else if let Some(r) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (true, r)
    } else {
        return Err(err("must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    let (creds, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let (username, password) = match creds.map(|c| c.split_once(':').unwrap_or((c, ""))) {
        Some((u, p)) => (
            Some(u.to_string()),
            Some(p.to_string()).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse().map_err(|_| err("the port is not a number"))?)
        }
        _ => (hostport, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() {
        return Err(err("no host"));
    }
    Ok(BrokerAddr {
        host: host.to_string(),
        port,
        username,
        password,
        tls,
        ca: None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("MQTT CA file {path}: {cause}")]
    Ca {
        path: std::path::PathBuf,
        cause: String,
    },
    #[error("no usable root certificates for the MQTT broker's TLS (give --mqtt-ca)")]
    NoRoots,
}

/// A rustls client config (ring) that trusts `ca` (PEM) or the system's roots.
fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad = |cause: String| TlsError::Ca {
                path: path.to_path_buf(),
                cause,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(match ca {
            Some(path) => TlsError::Ca {
                path: path.to_path_buf(),
                cause: "no certificates in it".into(),
            },
            None => TlsError::NoRoots,
        });
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A message from the broker; acknowledge it with [`EventBus::ack`] once handled.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    publish: Publish,
}

#[derive(Clone)]
pub struct EventBus {
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    counters: Arc<Counters>,
    /// Topics subscribed for eventbus→rest rules (changed at run time).
    extra: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Set when the edge stops: the connection then ends quietly.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Delivered to the consumer and not yet acknowledged by it.
    queued: AtomicUsize,
    /// QoS 0 messages dropped because the consumer fell too far behind.
    dropped: AtomicU64,
}

/// QoS 0 messages waiting for the consumer beyond which more are dropped.
const MAX_QUEUED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
#[error("MQTT publish to {topic}: {cause}")]
pub struct PublishError {
    pub topic: String,
    pub cause: String,
}

/// Largest MQTT packet in either direction (twin values up to 64 KiB; router bodies 12 MiB).
pub const MAX_PACKET: usize = 16 << 20;

impl EventBus {
    /// Connects as `client_id` and keeps `subscriptions` (QoS 1) across reconnections; inbound
    /// messages go to `inbound`, and each must be passed to [`EventBus::ack`] once handled.
    /// Connects as `client_id`, subscribing `subscriptions` and the rules' `rule_topics` in one
    /// SUBSCRIBE at each connection; `subscribed` turns true at the first SUBACK (the embedded
    /// broker admits devices from then on).
    pub fn start(
        addr: &BrokerAddr,
        client_id: &str,
        subscriptions: Vec<String>,
        rule_topics: std::collections::BTreeSet<String>,
        inbound: mpsc::UnboundedSender<Inbound>,
        subscribed: watch::Sender<bool>,
    ) -> Result<EventBus, TlsError> {
        let mut opts = MqttOptions::new(client_id, addr.host.clone(), addr.port);
        if addr.tls {
            let cfg = tls_config(addr.ca.as_deref())?;
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)),
            ));
        }
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_inflight(1000)
            .set_request_channel_capacity(10_000);
        if let Some(u) = &addr.username {
            opts.set_credentials(u.clone(), addr.password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        // Small packets (acks, results) must not wait for Nagle + delayed ACK (40 ms).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (conn_tx, connected) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let extra = Arc::new(std::sync::Mutex::new(rule_topics));
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let link = Link {
            stopping: stopping.clone(),
            extra: extra.clone(),
            client: client.clone(),
            subscriptions,
            inbound,
            connected: conn_tx,
            subscribed,
            addr: addr.to_string(),
            counters: counters.clone(),
        };
        tokio::spawn(run(eventloop, link));
        Ok(EventBus {
            client,
            connected,
            counters,
            extra,
            stopping,
        })
    }

    /// Disconnects from the broker for good (the edge is stopping).
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
    }

    /// Publishes at QoS 1 (queued while the broker is unreachable).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), PublishError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .map_err(|e| PublishError {
                topic: topic.to_string(),
                cause: e.to_string(),
            })
    }

    /// Acknowledges an inbound message once handled (PUBACK for QoS 1).
    pub async fn ack(&self, m: &Inbound) {
        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
        if m.publish.qos == QoS::AtMostOnce {
            return;
        }
        if let Err(e) = self.client.ack(&m.publish).await {
            tracing::debug!(topic = %m.topic, error = %e, "MQTT ack not sent");
        }
    }

    /// Sets the topics subscribed for eventbus→rest rules: new ones are subscribed, gone ones
    /// unsubscribed, and all of them again after every reconnection.
    pub fn set_rule_topics(&self, topics: std::collections::BTreeSet<String>) {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        for t in topics.difference(&extra) {
            if let Err(e) = self.client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                tracing::warn!(topic = %t, error = %e, "EventBus could not subscribe");
            }
        }
        for t in extra.difference(&topics) {
            let _ = self.client.try_unsubscribe(t.clone());
        }
        *extra = topics;
    }

    /// Whether `topic` is one a rule subscribed.
    pub fn is_rule_topic(&self, topic: &str) -> bool {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic)
    }

    /// QoS 0 messages dropped because the consumer fell too far behind.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// True while connected to the broker.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }
}

/// The MQTT topics the stored eventbus→rest Rules name (`<namespace>/<topic>`); the cloud sends
/// a node only the rules whose eventbus source names it.
pub fn rule_topics(meta: &MetaStore) -> std::collections::BTreeSet<String> {
    let keys = meta.keys("rule").unwrap_or_default();
    let subscribed = meta.keys(SUBTOPIC).unwrap_or_default();
    keys.iter()
        .filter_map(|k| {
            let rule = meta.get(k).ok().flatten()?;
            let ns = rule.pointer("/metadata/namespace")?.as_str()?;
            let topic = rule.pointer("/spec/sourceResource/topic")?.as_str()?;
            Some(format!("{ns}/{}", topic.trim_matches('/')))
        })
        .chain(subscribed.iter().filter_map(|k| {
            let t = meta.get(k).ok().flatten()?;
            Some(t.get("topic")?.as_str()?.to_string())
        }))
        .collect()
}

/// The record type of a topic a stock cloudcore subscribed (`subscribe`), beside the topics of
/// the rules kedge's cloud sends.
pub const SUBTOPIC: &str = "subtopic";

/// What the event loop works with.
struct Link {
    stopping: Arc<std::sync::atomic::AtomicBool>,
    extra: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    client: AsyncClient,
    subscriptions: Vec<String>,
    inbound: mpsc::UnboundedSender<Inbound>,
    connected: watch::Sender<bool>,
    /// Set at the first SUBACK: every topic of the first connection is subscribed.
    subscribed: watch::Sender<bool>,
    addr: String,
    counters: Arc<Counters>,
}

impl Link {
    /// Hands a message to the consumer, without ever waiting for it.
    fn deliver(&self, p: Publish) -> bool {
        let queued = self.counters.queued.load(Ordering::Relaxed);
        if p.qos == QoS::AtMostOnce && queued >= MAX_QUEUED {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(topic = %p.topic, dropped = n + 1, "EventBus consumer too slow; QoS 0 messages dropped");
            }
            return true;
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let m = Inbound {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            publish: p,
        };
        self.inbound.send(m).is_ok()
    }

    fn subscribe(&self) {
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let all: Vec<String> = self.subscriptions.iter().cloned().chain(extra).collect();
        if all.is_empty() {
            return;
        }
        let filters = all
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        // try_: the event loop itself drains the request channel, so it must not wait on it.
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::warn!(error = %e, "EventBus could not subscribe");
        }
    }
}

async fn run(mut eventloop: rumqttc::EventLoop, link: Link) {
    let mut delay = Duration::from_millis(100);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = Duration::from_millis(100);
                tracing::info!(broker = %link.addr, "EventBus connected to the MQTT broker");
                link.subscribe();
                link.connected.send_replace(true);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                link.subscribed
                    .send_if_modified(|s| !std::mem::replace(s, true));
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if !link.deliver(p) {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))
                if link.stopping.load(Ordering::SeqCst) =>
            {
                link.connected.send_replace(false);
                return;
            }
            Ok(_) => {}
            Err(_) if link.stopping.load(Ordering::SeqCst) => {
                link.connected.send_replace(false);
                return;
            }
            Err(e) => {
                if link.connected.send_replace(false) {
                    tracing::warn!(broker = %link.addr, error = %e, "EventBus lost the MQTT broker; reconnecting");
                } else {
                    tracing::debug!(broker = %link.addr, error = %e, "MQTT broker unreachable");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_and_passwords_never_print() {
        let a = parse_url("mqtt://127.0.0.1:18830").expect("url");
        assert_eq!(
            (a.host.as_str(), a.port, a.username.clone()),
            ("127.0.0.1", 18830, None)
        );
        let a = parse_url("mqtt://edge:s3cret@broker.local").expect("url");
        assert_eq!(a.port, 1883);
        assert_eq!(a.username.as_deref(), Some("edge"));
        assert_eq!(a.password.as_deref(), Some("s3cret"));
        assert!(!a.to_string().contains("s3cret"));
        assert_eq!(parse_url("tcp://[::1]:1884").expect("v6").host, "::1");
        let t = parse_url("mqtts://broker.local").expect("tls");
        assert!(t.tls);
        assert_eq!(t.port, 8883);
        assert!(t.to_string().starts_with("mqtts://"));
        for bad in ["http://x", "mqtt://", "mqtt://h:port", "mqtts://"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
