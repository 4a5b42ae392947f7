//! One client connection: CONNECT, then packets in both directions until DISCONNECT, an error,
//! a keepalive timeout, a takeover or shutdown. Outgoing messages are batched into one write.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish,
    SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, watch};

use crate::{Client, ClientKey, Outgoing, Receipt, Settled, Shared, topic};

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Protocol(String),
    #[error("MQTT 5 is not supported")]
    Mqtt5,
}

fn qos_of(q: QoS) -> u8 {
    q as u8
}

fn qos(n: u8) -> QoS {
    if n == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// Reads one packet, reading from the socket as needed.
async fn read_packet(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, SessionError> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(CodecError::InsufficientBytes(n)) => {
                buf.reserve(n.max(4096));
                if rd.read_buf(buf).await? == 0 {
                    return Err(SessionError::Closed);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn write_packets(
    wr: &mut OwnedWriteHalf,
    packets: &[Packet],
    max: usize,
) -> Result<(), SessionError> {
    let mut buf = BytesMut::new();
    for p in packets {
        p.write(&mut buf, max)?;
    }
    wr.write_all(&buf).await?;
    Ok(())
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = tcp.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let max = shared.cfg.max_packet;
    let first = tokio::time::timeout(
        shared.cfg.connect_timeout,
        read_connect(&mut rd, &mut buf, max),
    )
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Err(SessionError::Mqtt5)) => {
            // An MQTT 5 CONNACK with reason 0x84 (unsupported protocol version), which a v5
            // client reads and reports, rather than a 3.1.1 one it would take for a lost link.
            let _ = wr.write_all(&[0x20, 0x03, 0x00, 0x84, 0x00]).await;
            tracing::info!(%peer, "MQTT 5 connection refused: this broker speaks MQTT 3.1.1");
            return;
        }
        Ok(Ok(other)) => {
            tracing::debug!(%peer, packet = ?other, "MQTT client did not start with CONNECT");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "MQTT connect failed");
            return;
        }
        Err(_) => return,
    };
    if let Some(code) = refusal(&connect) {
        let ack = Packet::ConnAck(ConnAck::new(code, false));
        let _ = write_packets(&mut wr, &[ack], max).await;
        tracing::info!(%peer, client = %connect.client_id, ?code, "MQTT connection refused");
        return;
    }
    admitted(&shared.cfg.admission, &connect.client_id).await;
    let client_id = if connect.client_id.is_empty() {
        format!("kedge-anon-{}", rand_id(&peer))
    } else {
        connect.client_id.clone()
    };
    let (tx, rx) = mpsc::channel(shared.cfg.client_queue);
    let kick = Arc::new(Notify::new());
    let key = shared.register(
        &client_id,
        Client {
            tx: tx.clone(),
            kick: kick.clone(),
        },
    );
    let mut s = Session {
        shared: shared.clone(),
        key,
        tx,
        wr,
        max,
        next_pkid: 0,
        inflight: HashMap::new(),
    };
    let result = async {
        s.send(&[Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))])
        .await?;
        s.serve(&mut rd, &mut buf, rx, &kick, stop, connect.keep_alive)
            .await
    }
    .await;
    let graceful = matches!(result, Ok(()));
    if let Err(e) = &result {
        tracing::debug!(client = %client_id, error = %e, "MQTT session ended");
    }
    shared.unregister(&client_id, key);
    if !graceful && let Some(will) = connect.last_will {
        publish_will(&shared, will).await;
    }
}

/// What a connection's first bytes say: a CONNECT of MQTT 3.1.1, 5, or not MQTT at all.
fn first_bytes(buf: &[u8]) -> Result<Option<u8>, SessionError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if kind != 0x10 {
        return Err(SessionError::Protocol(format!(
            "expected CONNECT, got first byte {kind:#04x}"
        )));
    }
    // Fixed header: the type byte, then a 1–4 byte length; then the protocol name "MQTT" as a
    // 2-byte length and 4 bytes; then the level.
    let len_bytes = buf[1..].iter().take(4).position(|b| b & 0x80 == 0);
    Ok(len_bytes.and_then(|n| buf.get(1 + n + 1 + 6).copied()))
}

/// Reads the first packet, refusing at once what is not an MQTT 3.1.1 CONNECT.
async fn read_connect(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, SessionError> {
    loop {
        match first_bytes(buf)? {
            Some(5) => return Err(SessionError::Mqtt5),
            Some(_) => return read_packet(rd, buf, max).await,
            None if rd.read_buf(buf).await? == 0 => return Err(SessionError::Closed),
            None => {}
        }
    }
}

/// Why a CONNECT is refused, if it is.
/// Returns once `client` may be admitted (see [`crate::Admission`]).
async fn admitted(admission: &Option<crate::Admission>, client: &str) {
    let Some(a) = admission else { return };
    if a.first == client {
        return;
    }
    let mut open = a.open.clone();
    match tokio::time::timeout(a.wait, open.wait_for(|o| *o)).await {
        // Open, or its owner gone (the edge is stopping): nothing to wait for.
        Ok(_) => {}
        Err(_) => tracing::warn!(
            client,
            first = %a.first,
            "admitting an MQTT client before the edge's EventBus is subscribed: its messages \
             may find no subscriber"
        ),
    }
}

fn refusal(c: &Connect) -> Option<ConnectReturnCode> {
    if c.protocol != Protocol::V4 {
        return Some(ConnectReturnCode::RefusedProtocolVersion);
    }
    if c.client_id.is_empty() && !c.clean_session {
        return Some(ConnectReturnCode::BadClientId);
    }
    None
}

async fn publish_will(shared: &Shared, will: LastWill) {
    if topic::valid_name(&will.topic) {
        shared
            .publish(&will.topic, will.message, qos_of(will.qos), will.retain)
            .await;
    }
}

fn rand_id(peer: &SocketAddr) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", peer.port())
}

struct Session {
    shared: Arc<Shared>,
    key: ClientKey,
    tx: mpsc::Sender<Outgoing>,
    wr: OwnedWriteHalf,
    max: usize,
    next_pkid: u16,
    /// QoS 1 messages sent and not yet acknowledged, with their publishers' receipts.
    inflight: HashMap<u16, Option<Receipt>>,
}

/// A QoS 1 publish from this client whose PUBACK waits for its subscribers' (MQTT wants
/// PUBACKs in the order of the publishes, so they queue).
struct PendingAck {
    pkid: u16,
    settled: Option<Settled>,
    deadline: tokio::time::Instant,
}

/// What became of a publish's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every QoS 1 subscriber acknowledged it (or left).
    Confirmed,
    /// It was dropped for a subscriber too slow to take it.
    Failed,
    /// `ack_wait` ran out.
    TimedOut,
    Waiting,
}

/// Waits until the oldest pending PUBACK is decided (forever if none is pending).
async fn front_settled(pending: &mut VecDeque<PendingAck>) -> Outcome {
    let Some(front) = pending.front_mut() else {
        return std::future::pending().await;
    };
    let Some(settled) = front.settled.as_mut() else {
        return Outcome::Confirmed;
    };
    match tokio::time::timeout_at(front.deadline, settled.recv()).await {
        Ok(None) => Outcome::Confirmed,
        Ok(Some(())) => Outcome::Failed,
        Err(_) => Outcome::TimedOut,
    }
}

/// What is known now of a later pending publish.
fn outcome_now(p: &mut PendingAck) -> Outcome {
    match p.settled.as_mut().map(|s| s.try_recv()) {
        None | Some(Err(mpsc::error::TryRecvError::Disconnected)) => Outcome::Confirmed,
        Some(Ok(())) => Outcome::Failed,
        Some(Err(mpsc::error::TryRecvError::Empty)) => Outcome::Waiting,
    }
}

/// Most messages written in one batch.
const BATCH: usize = 256;

/// QoS 1 messages sent to one client and not yet acknowledged; beyond this the broker waits for
/// PUBACKs (flow control: a client that acknowledges only after handling a message cannot be
/// flooded faster than it handles them).
const MAX_INFLIGHT: usize = 1000;

impl Session {
    async fn send(&mut self, packets: &[Packet]) -> Result<(), SessionError> {
        write_packets(&mut self.wr, packets, self.max).await
    }

    async fn serve(
        &mut self,
        rd: &mut OwnedReadHalf,
        buf: &mut BytesMut,
        mut rx: mpsc::Receiver<Outgoing>,
        kick: &Notify,
        mut stop: watch::Receiver<bool>,
        keep_alive: u16,
    ) -> Result<(), SessionError> {
        // The spec allows one and a half keepalive periods of silence.
        let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut batch = Vec::with_capacity(BATCH);
        let mut deadline = idle.map(|d| tokio::time::Instant::now() + d);
        let mut pending = VecDeque::new();
        loop {
            tokio::select! {
                p = read_packet(rd, buf, self.max) => {
                    // Only what the client sends counts as a sign of life.
                    deadline = idle.map(|d| tokio::time::Instant::now() + d);
                    if !self.handle(p?, &mut pending).await? {
                        return Ok(());
                    }
                }
                outcome = front_settled(&mut pending) => self.send_acks(&mut pending, outcome).await?,
                n = rx.recv_many(&mut batch, BATCH.min(MAX_INFLIGHT - self.inflight.len())), if self.inflight.len() < MAX_INFLIGHT => {
                    if n == 0 {
                        return Err(SessionError::Closed);
                    }
                    let packets: Vec<Packet> = batch.drain(..).map(|o| self.outgoing(o)).collect();
                    self.send(&packets).await?;
                }
                _ = kick.notified() => return Err(SessionError::Protocol("taken over by a new connection with the same client id, or broker shutdown".into())),
                _ = stop.changed() => return Err(SessionError::Protocol("broker shutdown".into())),
                _ = sleep_until(deadline) => return Err(SessionError::Protocol("keepalive timeout".into())),
            }
        }
    }

    fn outgoing(&mut self, o: Outgoing) -> Packet {
        let mut p = Publish::from_bytes(o.topic, qos(o.qos), o.payload);
        p.retain = o.retain;
        if o.qos > 0 {
            p.pkid = self.pkid();
            self.inflight.insert(p.pkid, o.receipt);
        }
        Packet::Publish(p)
    }

    /// Sends the PUBACK of the oldest pending publish and of every later one already confirmed.
    /// A publish that cannot be confirmed gets no PUBACK: its publisher is disconnected, which
    /// any MQTT client takes as "not delivered" (the messages after it are re-sent too).
    async fn send_acks(
        &mut self,
        pending: &mut VecDeque<PendingAck>,
        first: Outcome,
    ) -> Result<(), SessionError> {
        let mut acks = Vec::new();
        let mut outcome = first;
        while outcome == Outcome::Confirmed {
            if let Some(p) = pending.pop_front() {
                acks.push(Packet::PubAck(PubAck::new(p.pkid)));
            }
            outcome = pending.front_mut().map_or(Outcome::Waiting, outcome_now);
        }
        self.send(&acks).await?;
        let why = match outcome {
            Outcome::Failed => "a subscriber was too slow to take the message".to_string(),
            Outcome::TimedOut => format!(
                "a subscriber did not acknowledge the message within {:?}",
                self.shared.cfg.ack_wait
            ),
            Outcome::Confirmed | Outcome::Waiting => return Ok(()),
        };
        self.shared
            .stats
            .unconfirmed
            .fetch_add(1, Ordering::Relaxed);
        Err(SessionError::Protocol(format!(
            "{why}; publisher disconnected unconfirmed"
        )))
    }

    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Handles one packet from the client; false when it disconnected cleanly.
    async fn handle(
        &mut self,
        p: Packet,
        pending: &mut VecDeque<PendingAck>,
    ) -> Result<bool, SessionError> {
        match p {
            Packet::Publish(p) => self.on_publish(p, pending).await?,
            Packet::PubAck(a) => {
                self.inflight.remove(&a.pkid);
            }
            Packet::PubRel(r) => self.send(&[Packet::PubComp(PubComp::new(r.pkid))]).await?,
            Packet::Subscribe(s) => self.on_subscribe(s).await?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await?,
            Packet::PingReq => self.send(&[Packet::PingResp]).await?,
            Packet::Disconnect => return Ok(false),
            Packet::Connect(_) => {
                return Err(SessionError::Protocol("a second CONNECT".into()));
            }
            // PUBREC/PUBCOMP never come: the broker sends at most QoS 1.
            _ => {}
        }
        Ok(true)
    }

    async fn on_publish(
        &mut self,
        p: Publish,
        pending: &mut VecDeque<PendingAck>,
    ) -> Result<(), SessionError> {
        if !topic::valid_name(&p.topic) {
            return Err(SessionError::Protocol(format!(
                "publish to an invalid topic {:?}",
                p.topic
            )));
        }
        let q = qos_of(p.qos);
        let settled = self.shared.publish(&p.topic, p.payload, q, p.retain).await;
        match q {
            1 if settled.is_none() && pending.is_empty() => {
                self.send(&[Packet::PubAck(PubAck::new(p.pkid))]).await
            }
            1 => {
                pending.push_back(PendingAck {
                    pkid: p.pkid,
                    settled,
                    deadline: tokio::time::Instant::now() + self.shared.cfg.ack_wait,
                });
                Ok(())
            }
            2 => self.send(&[Packet::PubRec(PubRec::new(p.pkid))]).await,
            _ => Ok(()),
        }
    }

    async fn on_subscribe(&mut self, s: Subscribe) -> Result<(), SessionError> {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            if !topic::valid_filter(&f.path) {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let granted = qos_of(f.qos).min(1);
            let mut router = self.shared.router();
            router.subscribe(self.key, &f.path, granted);
            retained.extend(
                router
                    .retained_for(&f.path)
                    .into_iter()
                    .map(|r| (r, granted)),
            );
            codes.push(SubscribeReasonCode::Success(qos(granted)));
        }
        self.send(&[Packet::SubAck(SubAck::new(s.pkid, codes))])
            .await?;
        // Retained messages follow the SUBACK, with the retain flag set.
        for (r, granted) in retained {
            let out = Outgoing {
                topic: r.topic,
                payload: r.payload,
                qos: r.qos.min(granted),
                retain: true,
                receipt: None,
            };
            self.shared.deliver(self.key, &self.tx, out).await;
        }
        Ok(())
    }

    async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), SessionError> {
        {
            let mut router = self.shared.router();
            for t in &u.topics {
                router.unsubscribe(self.key, t);
            }
        }
        self.send(&[Packet::UnsubAck(UnsubAck::new(u.pkid))]).await
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_the_protocol_level() {
        let v311 = [0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02];
        assert_eq!(first_bytes(&v311).ok().flatten(), Some(4));
        let v5 = [0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05];
        assert_eq!(first_bytes(&v5).ok().flatten(), Some(5));
        assert!(
            matches!(first_bytes(&v5[..4]), Ok(None)),
            "needs more bytes"
        );
        assert!(matches!(first_bytes(&[]), Ok(None)));
        assert!(first_bytes(b"GET / HTTP/1.1").is_err());
    }
}
