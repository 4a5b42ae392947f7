//! EventBus's inbound loop: what the broker delivers goes, in order, to DeviceTwin (the twin,
//! state and membership topics) or, for eventbus→rest rules' topics, into the outbox for the
//! cloud. One loop for both, because MQTT wants QoS 1 messages acknowledged in the order they
//! arrived. On every broker (re)connection DeviceTwin restores its retained deltas.

use std::sync::Arc;
use std::time::Duration;

use kedge_core::envelope::{Message, group, op};
use tokio::sync::mpsc;

use super::{EventBus, Inbound};
use crate::devicetwin::DeviceTwin;
use crate::edgehub::outbox::Outbox;

/// At most this many MQTT messages are taken from the queue at once (one outbox commit).
const BURST: usize = 512;

pub async fn run(
    bus: EventBus,
    dt: Arc<DeviceTwin>,
    outbox: Arc<Outbox>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
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
                // In order, a run of one kind at a time: uploads, then twin messages, ...
                let mut run = Vec::new();
                for m in burst {
                    if !run.is_empty() && is_upload(&bus, &run[0]) != is_upload(&bus, &m) {
                        take(&bus, &dt, &outbox, std::mem::take(&mut run)).await;
                    }
                    run.push(m);
                }
                take(&bus, &dt, &outbox, run).await;
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

fn is_upload(bus: &EventBus, m: &Inbound) -> bool {
    bus.is_rule_topic(&m.topic)
}

/// A run of messages of one kind: uploads for the cloud, or DeviceTwin's (one commit each way).
async fn take(bus: &EventBus, dt: &DeviceTwin, outbox: &Outbox, run: Vec<Inbound>) {
    match run.first() {
        None => {}
        Some(m) if is_upload(bus, m) => upload(outbox, bus, run).await,
        Some(_) => dt.on_mqtt(run).await,
    }
}

/// Messages on eventbus→rest rules' topics: into the outbox in one commit (each kept until the
/// cloud has delivered it), then acknowledged to the broker.
///
/// A store that fails (disk full, outbox full) is retried until it succeeds, the messages held
/// unacknowledged meanwhile: nothing more is taken from the broker, whose publishers wait for
/// their PUBACK (and are disconnected unconfirmed if it takes too long), so a device is never
/// told "stored" of a message that was not.
async fn upload(outbox: &Outbox, bus: &EventBus, burst: Vec<Inbound>) {
    let burst = fit_the_channel(bus, burst).await;
    let msgs = |rest: &[Inbound]| {
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
async fn fit_the_channel(bus: &EventBus, burst: Vec<Inbound>) -> Vec<Inbound> {
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
