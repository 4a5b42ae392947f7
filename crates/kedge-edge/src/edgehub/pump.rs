//! The outbox pump: sends what the outbox releases while connected; on a disconnect, what was
//! unacknowledged goes back to be sent first next time. Re-sends are timed on the monotonic
//! clock.

use std::sync::Arc;
use std::time::Duration;

use super::client::EdgeHub;
use super::outbox::Outbox;

pub(super) async fn run(outbox: Arc<Outbox>, hub: EdgeHub) {
    let mut connected = hub.connected();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tick.tick() => {}
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*connected.borrow_and_update() {
                    outbox.disconnected();
                }
            }
        }
        if *connected.borrow() {
            for m in outbox.poll(kedge_core::clock::monotonic_ms()) {
                hub.send(m).await;
            }
        }
    }
}
