//! MetaManager: every object change from the cloud is stored (`store`), the components that act
//! on its kind are told — DeviceTwin applies devices and models to its own tables, EventBus
//! subscribes the topics of eventbus→rest rules, Edged reconciles pods — and only then is it
//! acknowledged, so an ACK means "stored and applied". A failure is answered with `error` and the
//! cloud re-sends.

mod store;

pub use store::{Applied, MetaError, MetaStore};

use std::sync::Arc;

use kedge_core::envelope::Message;
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
