//! One queue of hub events per node, each drained by its own task: nodes are handled at once,
//! each node's events in order, and a slow node or a slow API call delays only that node. The
//! queue is bounded, so a node that sends faster than it is handled is read from more slowly
//! (its session waits, and TCP slows its edge down). A bounded number of events is handled at
//! once across all nodes. A node's task ends when its sessions are gone and its queue is empty.
//! Acknowledgements skip the queue: they only update memory (the delivery queue, the record
//! index), and one held up behind slow work would make the cloud re-send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Semaphore, mpsc};

use super::Ctl;
use crate::cloudhub::hub::{Events, HubEvent};

/// Events one node may have waiting.
const QUEUE: usize = 1024;

/// Events handled at once across all nodes (API calls in flight).
pub const CONCURRENCY: usize = 256;

pub struct Workers {
    queues: Mutex<HashMap<String, mpsc::WeakSender<HubEvent>>>,
    ctl: OnceLock<Arc<Ctl>>,
    permits: Arc<Semaphore>,
}

impl Workers {
    pub fn new() -> Arc<Workers> {
        Arc::new(Workers {
            queues: Mutex::default(),
            ctl: OnceLock::new(),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
        })
    }

    /// Waits (up to `grace`) for the events being handled, then stops every node's queue: a
    /// stopping cloud ends no API call half-way.
    pub async fn quiesce(&self, grace: std::time::Duration) {
        let all = self.permits.acquire_many(CONCURRENCY as u32);
        // Held until closed, so no queue starts another event in between.
        let held = tokio::time::timeout(grace, all).await;
        if held.is_err() {
            tracing::warn!(?grace, "edge messages still being applied at shutdown");
        }
        self.permits.close();
        drop(held);
    }

    /// The controller the queues are drained into; set once, before the hub accepts edges.
    pub(super) fn bind(&self, ctl: Arc<Ctl>) {
        let _ = self.ctl.set(ctl);
    }
}

impl Events for Arc<Workers> {
    fn queue(&self, node: &str) -> mpsc::Sender<HubEvent> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = queues.get(node).and_then(mpsc::WeakSender::upgrade) {
            return tx;
        }
        // Forget the queues of nodes whose tasks have ended, now and then.
        if queues.len().is_power_of_two() {
            queues.retain(|_, q| q.strong_count() > 0);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        queues.insert(node.to_string(), tx.downgrade());
        let ctl = self.ctl.get().cloned();
        tokio::spawn(drain(ctl, node.to_string(), rx, self.permits.clone()));
        tx
    }

    fn acked(&self, node: &str, ack: &kedge_core::envelope::Message) -> bool {
        match self.ctl.get() {
            Some(ctl) => {
                ctl.ack(node, ack);
                true
            }
            None => false,
        }
    }
}

/// Handles `node`'s events in order until its sessions are gone.
async fn drain(
    ctl: Option<Arc<Ctl>>,
    node: String,
    mut events: mpsc::Receiver<HubEvent>,
    permits: Arc<Semaphore>,
) {
    let Some(ctl) = ctl else {
        tracing::error!(node, "no controller to hand the node's events to");
        return;
    };
    while let Some(ev) = events.recv().await {
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        ctl.handle(&node, ev).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stopping_cloud_waits_for_the_event_in_hand_then_takes_no_more() {
        let w = Workers::new();
        let in_hand = w.permits.clone().acquire_owned().await.expect("permit");
        let stopping = tokio::spawn({
            let w = w.clone();
            async move { w.quiesce(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        assert!(!stopping.is_finished(), "waits for the event being handled");
        drop(in_hand);
        tokio::time::timeout(Duration::from_secs(10), stopping)
            .await
            .expect("done once it is")
            .expect("task");
        assert!(
            w.permits.acquire().await.is_err(),
            "no further event starts"
        );
    }
}
