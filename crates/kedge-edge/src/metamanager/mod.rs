//! MetaManager: every object change from the cloud is stored (`store`), the components that act
//! on its kind are told — DeviceTwin applies devices and models to its own tables, EventBus
//! subscribes the topics of eventbus→rest rules, Edged reconciles pods — and only then is it
//! acknowledged, so an ACK means "stored and applied". A failure is answered with `error` and the
//! cloud re-sends.

mod store;

pub use store::{Applied, MetaError, MetaStore};

use std::sync::Arc;

use kedge_core::envelope::{Message, group, op};
use kedge_core::resource::{Kind, ObjectRef};
use tokio::sync::mpsc;

use crate::devicetwin::DeviceTwin;
use crate::edged::Edged;
use crate::edgehub::client::EdgeHub;
use crate::eventbus::{self, EventBus};

/// The components that act on stored objects.
pub struct Consumers {
    pub devicetwin: Arc<DeviceTwin>,
    pub dmi: Arc<crate::devicetwin::dmi::Dmi>,
    pub bus: EventBus,
    pub edged: Edged,
}

/// MetaManager's loop over the object changes EdgeHub routes to it.
pub async fn run(
    mut objects: mpsc::Receiver<Message>,
    meta: Arc<MetaStore>,
    hub: EdgeHub,
    to: Consumers,
) {
    while let Some(m) = objects.recv().await {
        if let Some(stored) = subscription(&m) {
            // Kept as a record of its own; a stock cloudcore expects no answer.
            if let Err(e) = store(&meta, &stored).await {
                tracing::warn!(topic = %stored.route.resource, error = %e, "could not store a subscription");
            }
            to.bus.set_rule_topics(eventbus::rule_topics(&meta));
            continue;
        }
        let reply = match store(&meta, &m).await {
            Ok((kind, applied)) => {
                to.stored(&meta, kind, &m, applied).await;
                m.ack()
            }
            Err(e) => {
                tracing::warn!(resource = %m.route.resource, error = %e, "could not store a cloud message");
                m.error_reply(&e.to_string())
            }
        };
        hub.send(reply).await;
    }
}

/// The record a stock cloudcore's `subscribe`/`unsubscribe` of `<namespace>/<topic>` keeps
/// (`null/subtopic/<namespace>/<topic>`, as KubeEdge's `sub_topics` table), or its
/// `start`/`stop` of a servicebus `target_url` (`servicebus::server::record_of`); `None` for
/// any other message.
fn subscription(m: &Message) -> Option<Message> {
    use crate::edgehub::dispatch::{OP_START, OP_STOP, OP_SUBSCRIBE, OP_UNSUBSCRIBE};
    let operation = match m.route.operation.as_str() {
        OP_SUBSCRIBE | OP_START => op::INSERT,
        OP_UNSUBSCRIBE | OP_STOP => op::DELETE,
        _ => return None,
    };
    if matches!(m.route.operation.as_str(), OP_START | OP_STOP) {
        let (resource, content) = crate::servicebus::server::record_of(&m.route.resource);
        let from = "router_servicebus";
        return Some(Message::new(
            from,
            group::RESOURCE,
            operation,
            &resource,
            content,
        ));
    }
    let topic = m.route.resource.trim_matches('/');
    let resource = kedge_core::resource::object("", eventbus::SUBTOPIC, topic);
    let content = serde_json::json!({"topic": topic});
    Some(Message::new(
        "router_eventbus",
        group::RESOURCE,
        operation,
        &resource,
        content,
    ))
}

/// Stores `m` (off the async threads: SQLite blocks) and says what kind of object it was.
async fn store(meta: &Arc<MetaStore>, m: &Message) -> Result<(Kind, Applied), MetaError> {
    let kind = ObjectRef::parse(&m.route.resource)
        .map_err(|_| MetaError::Resource(m.route.resource.clone()))?
        .kind();
    let (store, msg) = (meta.clone(), m.clone());
    let applied = tokio::task::spawn_blocking(move || store.apply(&msg))
        .await
        .map_err(|e| MetaError::Task(e.to_string()))??;
    Ok((kind, applied))
}

impl Consumers {
    /// Tells the component that acts on `kind` (before the cloud is told).
    async fn stored(&self, meta: &MetaStore, kind: Kind, m: &Message, applied: Applied) {
        let deleted = match applied {
            Applied::Stored => false,
            Applied::Deleted => true,
            Applied::Stale | Applied::Ignored => return,
        };
        match kind {
            Kind::Device | Kind::DeviceModel => {
                self.devicetwin.on_object(kind, &m.content, deleted).await;
                self.dmi.changed(kind, &m.route.resource);
            }
            Kind::Rule => self.bus.set_rule_topics(eventbus::rule_topics(meta)),
            Kind::Pod | Kind::ConfigMap | Kind::Secret => self.edged.wake(),
            Kind::Node | Kind::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloudcore_subscription_is_kept_as_a_record_of_its_topic() {
        let m = Message::new(
            "router_eventbus",
            "user",
            "subscribe",
            "default/test",
            serde_json::Value::Null,
        );
        let r = subscription(&m).expect("a subscription");
        assert_eq!(r.route.operation, "insert");
        assert_eq!(r.route.resource, "null/subtopic/default/test");
        assert_eq!(r.content["topic"], "default/test");
        let gone = Message::new(
            "router_eventbus",
            "user",
            "unsubscribe",
            "default/test",
            serde_json::Value::Null,
        );
        assert_eq!(subscription(&gone).expect("one").route.operation, "delete");
        let pod = Message::new(
            "edgecontroller",
            "resource",
            "update",
            "default/pod/a",
            serde_json::json!({}),
        );
        assert!(subscription(&pod).is_none());
    }
}
