//! What `/metrics` reports about the edge, read from live state at each scrape.

use std::sync::Arc;

use crate::{Edge, edged};

impl Edge {
    /// What `/metrics` reports about the edge, read at each scrape.
    pub fn metrics(&self) -> kedge_http::metrics::Source {
        use kedge_http::metrics::Reading;
        let (hub, outbox) = (self.hub.clone(), self.outbox.clone());
        let dt = self.devicetwin.clone();
        let broker = self.broker.as_ref().map(|b| b.stats());
        let bus = self.bus.clone();
        let runtime = self.edged.runtime();
        Arc::new(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let mut r = vec![
                Reading::gauge(
                    "kedge_edge_connected",
                    "1 while connected to CloudHub.",
                    u64::from(*hub.connected().borrow()),
                ),
                Reading::gauge(
                    "kedge_edge_outbox_messages",
                    "Messages waiting for the cloud's ack.",
                    outbox.len() as u64,
                ),
                Reading::gauge(
                    "kedge_edge_outbox_bytes",
                    "Bytes waiting for the cloud's ack.",
                    outbox.bytes(),
                ),
                Reading::counter(
                    "kedge_edge_outbox_refused",
                    "Messages refused because the outbox was full.",
                    outbox.refused(),
                ),
                Reading::gauge(
                    "kedge_devicetwin_devices",
                    "Devices bound to this node.",
                    dt.device_ids().len() as u64,
                ),
                Reading::gauge(
                    "kedge_edged_runtime_up",
                    "1 while the container runtime answers (0 also when Edged is off).",
                    u64::from(matches!(*runtime.borrow(), edged::Runtime::Up { .. })),
                ),
                Reading::gauge(
                    "kedge_eventbus_connected",
                    "1 while EventBus is connected to the MQTT broker.",
                    u64::from(*bus.connected().borrow()),
                ),
            ];
            if let Some(b) = &broker {
                r.extend([
                    Reading::gauge(
                        "kedge_broker_clients",
                        "MQTT clients connected to the embedded broker.",
                        b.connected.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_received",
                        "MQTT messages published to the embedded broker.",
                        b.received.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_delivered",
                        "MQTT messages queued for subscribers.",
                        b.delivered.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_dropped",
                        "MQTT messages dropped for subscribers too slow to take them.",
                        b.dropped.load(Relaxed),
                    ),
                    Reading::counter(
                        "kedge_broker_unconfirmed",
                        "MQTT publishers disconnected unconfirmed: a subscriber did not acknowledge within 30 s.",
                        b.unconfirmed.load(Relaxed),
                    ),
                ]);
            }
            r
        })
    }
}
