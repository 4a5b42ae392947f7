//! `kedge demo counter`: the seed's counter device. It follows its twin's desired `status`: while
//! `ON` it counts once a second and reports the count as the twin's actual value; `OFF` stops
//! it. It speaks only MQTT, exactly as a real device or mapper would.

use std::time::Duration;

use anyhow::Context;
use kedge_core::twin::topic;
use kedge_edge::eventbus::{self, EventBus};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The counter's state, driven by what it hears (pure, so it is tested without a broker).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub on: bool,
    pub count: u64,
}

impl Counter {
    /// Takes a `twin/get/result` or `twin/update/delta` payload into account.
    pub fn hear(&mut self, payload: &Value) {
        let desired = payload
            .pointer("/delta/status")
            .or_else(|| payload.pointer("/twin/status/expected/value"))
            .and_then(Value::as_str);
        if let Some(d) = desired {
            self.on = d.eq_ignore_ascii_case("ON");
        }
    }

    /// One second passed: the report to publish, if counting.
    pub fn tick(&mut self) -> Option<Value> {
        if !self.on {
            return None;
        }
        self.count += 1;
        Some(
            json!({"event_id": "", "timestamp": kedge_core::clock::now_ms(),
            "twin": {"status": {"actual": {"value": self.count.to_string()}, "metadata": {"type": "string"}}}}),
        )
    }
}

/// Runs the counter for device `id` (`<namespace>/<name>`) against the broker at `url`, until
/// `stop` says so.
pub async fn counter(
    url: &str,
    id: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr = eventbus::parse_url(url)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subs = vec![
        topic::device(id, "twin/update/delta"),
        topic::device(id, "twin/get/result"),
    ];
    let (subscribed, _) = tokio::sync::watch::channel(false);
    let bus = EventBus::start(
        &addr,
        &format!("kedge-demo-counter-{}", std::process::id()),
        subs,
        Default::default(),
        tx,
        subscribed,
    )?;
    let mut connected = bus.connected();
    let mut state = Counter::default();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    tracing::info!(device = id, broker = %addr, "counter started: set the twin's desired status to ON to count");
    loop {
        tokio::select! {
            _ = stop.changed() => {
                bus.stop().await;
                return Ok(());
            }
            changed = connected.changed() => {
                changed.context("MQTT client stopped")?;
                if *connected.borrow_and_update() {
                    // Ask for the twin on every (re)connection: the desired state may have moved.
                    bus.publish(&topic::device(id, "twin/get"), r#"{"event_id":"counter"}"#, false).await?;
                }
            }
            m = rx.recv() => {
                let m = m.context("MQTT client stopped")?;
                if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                    let was = state.on;
                    state.hear(&v);
                    if state.on != was {
                        tracing::info!(device = id, on = state.on, count = state.count, "counter switched");
                    }
                }
                bus.ack(&m).await;
            }
            _ = second.tick() => {
                if let Some(report) = state.tick() {
                    bus.publish(&topic::device(id, "twin/update"), report.to_string(), false).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_counts_only_while_desired_is_on() {
        let mut c = Counter::default();
        assert_eq!(c.tick(), None);
        c.hear(&json!({"twin": {"status": {"expected": {"value": "OFF"}}}}));
        assert_eq!(c.tick(), None);
        c.hear(&json!({"delta": {"status": "ON"}}));
        let r = c.tick().expect("counting");
        assert_eq!(r.pointer("/twin/status/actual/value"), Some(&json!("1")));
        assert!(c.tick().is_some());
        c.hear(&json!({"delta": {"status": "OFF"}}));
        assert_eq!(c.tick(), None);
        assert_eq!(c.count, 2);
        c.hear(&json!({"unrelated": true}));
        assert!(!c.on);
    }
}
