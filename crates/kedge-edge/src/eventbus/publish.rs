//! rest→eventbus: a message from the cloud (op `publish`, resource = the topic) is published on
//! the broker, then answered (`response` "OK", or `error` with the reason), so the caller's
//! 200 means "published at the edge".

use kedge_core::envelope::Message;
use tokio::sync::mpsc;

use super::EventBus;
use crate::edgehub::client::EdgeHub;

pub async fn run(mut publishes: mpsc::Receiver<Message>, bus: EventBus, hub: EdgeHub) {
    while let Some(m) = publishes.recv().await {
        hub.send(from_cloud(&bus, &m).await).await;
    }
}

/// Publishes `m` and returns the answer for the cloud.
pub async fn from_cloud(bus: &EventBus, m: &Message) -> Message {
    let topic = m.route.resource.as_str();
    if topic.is_empty() || topic.contains(['+', '#']) {
        return m.error_reply(&format!("{topic:?} is not a topic one can publish to"));
    }
    let body = kedge_core::rule::content_to_body(&m.content);
    match bus.publish(topic, body, false).await {
        Ok(()) => m.ack(),
        Err(e) => m.error_reply(&e.to_string()),
    }
}
