//! DeviceTwin: the node's devices and their twins, kept in SQLite (`store`) and spoken about over
//! MQTT (`$hw/events/...`, KubeEdge's topics and payloads). Everything is stored before it is
//! published or reported:
//! - from the cloud (Device and DeviceModel objects, via MetaManager): desired values become
//!   `expected`; changes go out as `twin/update/document` and a retained `twin/update/delta`, so a
//!   device that (re)subscribes gets the latest delta;
//! - from devices (`twin/update`, `state/update`): checked against the model, stored, answered on
//!   `.../result`, and reported to the cloud through the outbox (one coalescing key per device,
//!   each report carrying every reported value, so the latest report is all the cloud needs);
//!   what arrives together is stored in one commit (`commit`);
//! - `twin/get` and `membership/get` are answered from the store, with or without the cloud.

mod commit;
pub mod dmi;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kedge_core::dialect::Dialect;
use kedge_core::envelope::{Message, group, op};
use kedge_core::resource::Kind;
use kedge_core::twin::merge::{self, Changes};
use kedge_core::twin::topic::{self, Inbound as Topic};
use kedge_core::twin::{self as twin, MsgTwin, TwinError, TwinUpdate, TwinValue, device};
use serde_json::{Value, json};

use crate::edgehub::outbox::Outbox;
use crate::eventbus::{EventBus, Inbound};
use crate::metamanager::MetaStore;
use store::{DeviceRecord, TwinStore};

/// Device states a device may report (compared case-insensitively, as KubeEdge).
const STATES: [&str; 5] = ["online", "offline", "ok", "unknown", "unhealthy"];

/// An MQTT message to publish (retained or not).
struct Out {
    topic: String,
    payload: Value,
    retain: bool,
}

fn out(topic: String, payload: Value) -> Out {
    Out {
        topic,
        payload,
        retain: false,
    }
}

/// A change to one device, from MQTT or a mapper; stored in groups (`commit`).
enum Write {
    /// `twin/update` (DMI `ReportDeviceStatus`): values to merge.
    Twin { id: String, update: TwinUpdate },
    /// `state/update` (DMI `ReportDeviceStates`): the device's new state, checked.
    State { id: String, state: String },
}

impl Write {
    fn id(&self) -> &str {
        match self {
            Write::Twin { id, .. } | Write::State { id, .. } => id,
        }
    }
}

/// What a write did: the twins' changes, or the device as `state/update/result` shows it.
enum Outcome {
    Twin(Changes),
    State(Value),
}

/// A write merged, not yet stored: the device after it, and its report for the cloud.
struct Staged {
    record: DeviceRecord,
    report: Option<(Message, String)>,
    outcome: Outcome,
}

/// A stored write: its outcome, and the delta to publish when the delta changed.
struct Applied {
    outcome: Outcome,
    delta: Option<Out>,
}

/// A write asked for by an MQTT message: where its answer goes.
struct Asked {
    at: usize,
    id: String,
    result_topic: String,
    event_id: String,
}

pub struct DeviceTwin {
    node: String,
    commit: commit::Queue,
    store: TwinStore,
    meta: Arc<MetaStore>,
    devices: Mutex<HashMap<String, DeviceRecord>>,
    /// The delta last published per device: a delta goes out when it changes, not on every
    /// report that leaves it as it was (the retained copy keeps it for late subscribers).
    published: Mutex<HashMap<String, BTreeMap<String, String>>>,
    bus: EventBus,
    outbox: Arc<Outbox>,
    /// The cloud's dialect (EdgeHub's, once started): a stock cloudcore is sent every report.
    cloud: std::sync::OnceLock<tokio::sync::watch::Receiver<Dialect>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceTwinError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

fn now() -> i64 {
    kedge_core::clock::now_ms() as i64
}

impl DeviceTwin {
    pub fn open(
        node: &str,
        db: crate::db::Db,
        meta: Arc<MetaStore>,
        bus: EventBus,
        outbox: Arc<Outbox>,
    ) -> Result<Arc<DeviceTwin>, DeviceTwinError> {
        let store = TwinStore::open_in(db)?;
        let devices = store
            .load()?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        Ok(Arc::new(DeviceTwin {
            node: node.to_string(),
            commit: commit::Queue::new(),
            store,
            meta,
            devices: Mutex::new(devices),
            published: Mutex::default(),
            bus,
            outbox,
            cloud: std::sync::OnceLock::new(),
        }))
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceRecord>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Devices known to this node, sorted by id.
    pub fn device_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.devices().keys().cloned().collect();
        ids.sort();
        ids
    }

    async fn publish(&self, outs: Vec<Out>) {
        for o in outs {
            let payload = serde_json::to_vec(&o.payload).unwrap_or_default();
            if let Err(e) = self.bus.publish(&o.topic, payload, o.retain).await {
                tracing::warn!(error = %e, "DeviceTwin publish");
            }
        }
    }

    /// `d`'s delta, if it changed since last published.
    fn changed_delta(&self, d: &DeviceRecord) -> Option<Out> {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        delta_out(d, &mut published)
    }

    /// Publishes the retained delta of every device out of sync (the broker may have restarted).
    pub async fn republish_deltas(&self) {
        let outs: Vec<Out> = {
            // Lock order everywhere: devices, then published.
            let devices = self.devices();
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.clear();
            devices
                .values()
                .filter_map(|d| delta_out(d, &mut published))
                .collect()
        };
        self.publish(outs).await;
    }

    /// Handles a burst of MQTT messages in order: their twin and state updates are stored
    /// together (one commit), a read sees every write before it; each message is acknowledged
    /// once what it carried is stored, then its answers are published.
    pub async fn on_mqtt(&self, burst: Vec<Inbound>) {
        let mut outs: Vec<Vec<Out>> = Vec::with_capacity(burst.len());
        let mut asked: Vec<(Asked, Write)> = Vec::new();
        for (at, m) in burst.iter().enumerate() {
            let event_id = twin::event_id_of(&m.payload);
            let (id, result_topic, write) = match topic::parse(&m.topic) {
                Some(Topic::TwinUpdate { id }) => {
                    let write = twin::parse_update(&m.payload).map(|update| Write::Twin {
                        id: id.clone(),
                        update,
                    });
                    (id.clone(), topic::device(&id, "twin/update/result"), write)
                }
                Some(Topic::StateUpdate { id }) => {
                    let write = parse_state(&m.payload).map(|state| Write::State {
                        id: id.clone(),
                        state,
                    });
                    (id.clone(), topic::device(&id, "state/update/result"), write)
                }
                read => {
                    self.flush(&mut asked, &mut outs).await;
                    outs.push(match read {
                        Some(Topic::TwinGet { id }) => self.twin_get(&id, &m.payload),
                        Some(Topic::MembershipGet { node }) if node == self.node => {
                            self.membership_get(&m.payload)
                        }
                        _ => Vec::new(),
                    });
                    continue;
                }
            };
            match write {
                Ok(w) => {
                    outs.push(Vec::new());
                    let a = Asked {
                        at,
                        id,
                        result_topic,
                        event_id,
                    };
                    asked.push((a, w));
                }
                Err(e) => outs.push(refusal(&id, result_topic, &event_id, &e)),
            }
        }
        self.flush(&mut asked, &mut outs).await;
        for (m, o) in burst.iter().zip(outs) {
            self.bus.ack(m).await;
            self.publish(o).await;
        }
    }

    /// Stores the writes asked so far and puts their answers in their places in `outs`.
    async fn flush(&self, asked: &mut Vec<(Asked, Write)>, outs: &mut [Vec<Out>]) {
        if asked.is_empty() {
            return;
        }
        let (asked, writes): (Vec<Asked>, Vec<Write>) = std::mem::take(asked).into_iter().unzip();
        for (a, done) in asked.into_iter().zip(self.commit.write(writes).await) {
            let now = now();
            outs[a.at] = match done {
                Ok(Applied {
                    outcome: Outcome::Twin(changes),
                    delta,
                }) => {
                    let result = merge::update_result(&a.event_id, &changes, now);
                    let mut o = vec![out(a.result_topic, result)];
                    o.extend(twin_outs(&a.id, &changes, delta));
                    o
                }
                Ok(Applied {
                    outcome: Outcome::State(device),
                    ..
                }) => {
                    let result =
                        json!({"event_id": a.event_id, "timestamp": now, "device": device});
                    vec![out(a.result_topic, result)]
                }
                Err(e) => refusal(&a.id, a.result_topic, &a.event_id, &e),
            };
        }
    }

    /// Follows the dialect of the cloud EdgeHub connects to.
    pub fn follow_cloud(&self, cloud: tokio::sync::watch::Receiver<Dialect>) {
        let _ = self.cloud.set(cloud);
    }

    /// Whether every report goes to the cloud, not only those that change a value: cloudcore
    /// stores the first report of a property empty (KubeEdge's bug), so a device that keeps
    /// reporting one value would never show it.
    fn report_every(&self) -> bool {
        self.cloud.get().is_some_and(|c| c.borrow().is_kubeedge())
    }

    /// Merges `writes` in order (a device written twice gets both) and stores the devices with
    /// their reports for the cloud in one transaction; nothing changes in memory unless it
    /// committed.
    fn apply_many(&self, writes: Vec<Write>) -> Vec<Result<Applied, TwinError>> {
        let every = self.report_every();
        let mut devices = self.devices();
        let mut latest: HashMap<String, DeviceRecord> = HashMap::new();
        let mut staged: Vec<Result<Staged, TwinError>> = writes
            .iter()
            .map(|w| {
                let current = latest.get(w.id()).or_else(|| devices.get(w.id()));
                let s = stage(current, w, every)?;
                latest.insert(w.id().to_string(), s.record.clone());
                Ok(s)
            })
            .collect();
        let reports = staged
            .iter_mut()
            .flatten()
            .filter_map(|s| s.report.take())
            .collect();
        let stored = self.outbox.push_keyed_with(reports, |db| {
            // Against what is stored: only what changed is written.
            latest
                .iter()
                .try_for_each(|(id, d)| store::save_in(db, d, devices.get(id)))
        });
        match stored {
            Ok(refused) => {
                for e in refused {
                    tracing::warn!(error = %e, "device report not queued for the cloud");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = writes.len(), "device updates not stored");
                let why = e.to_string();
                return staged
                    .into_iter()
                    .map(|s| s.and(Err(TwinError::NotStored(why.clone()))))
                    .collect();
            }
        }
        devices.extend(latest);
        staged
            .into_iter()
            .map(|s| {
                let s = s?;
                let delta = match s.outcome {
                    Outcome::Twin(_) => self.changed_delta(&s.record),
                    Outcome::State(_) => None,
                };
                Ok(Applied {
                    outcome: s.outcome,
                    delta,
                })
            })
            .collect()
    }

    async fn write(&self, w: Write) -> Result<Applied, TwinError> {
        let mut done = self.commit.write(vec![w]).await;
        done.pop()
            .unwrap_or_else(|| Err(TwinError::NotStored("no answer".into())))
    }

    /// A mapper's report (DMI `ReportDeviceStatus`): the reported values, handled as the same
    /// device's `twin/update` (stored, then reported to the cloud, the document and delta
    /// published); refused as a whole when the device is not on this node or a value is wrong.
    pub async fn report_from_mapper(
        &self,
        id: &str,
        reported: Vec<(String, String)>,
    ) -> Result<(), TwinError> {
        let twin = reported
            .into_iter()
            .map(|(property, value)| {
                let actual = TwinValue {
                    value: Some(value),
                    metadata: None,
                };
                let t = MsgTwin {
                    actual: Some(actual),
                    ..MsgTwin::default()
                };
                (property, Some(t))
            })
            .collect();
        let update = TwinUpdate {
            event_id: String::new(),
            timestamp: now(),
            twin,
        };
        let done = self.write(Write::Twin {
            id: id.to_string(),
            update,
        });
        if let Applied {
            outcome: Outcome::Twin(changes),
            delta,
        } = done.await?
        {
            self.publish(twin_outs(id, &changes, delta)).await;
        }
        Ok(())
    }

    /// A mapper's state report (DMI `ReportDeviceStates`), handled as `state/update`.
    pub async fn state_from_mapper(&self, id: &str, state: &str) -> Result<(), TwinError> {
        let state = state_of(state)?;
        self.write(Write::State {
            id: id.to_string(),
            state,
        })
        .await
        .map(drop)
    }

    fn twin_get(&self, id: &str, payload: &[u8]) -> Vec<Out> {
        let event_id = twin::event_id_of(payload);
        let result = match self.devices().get(id) {
            Some(d) => merge::get_result(&event_id, &d.twins, now()),
            None => merge::error_result(&event_id, &TwinError::UnknownDevice(id.into()), now()),
        };
        vec![out(topic::device(id, "twin/get/result"), result)]
    }

    fn membership_get(&self, payload: &[u8]) -> Vec<Out> {
        let event_id = twin::event_id_of(payload);
        let mut devices: Vec<Value> = self.devices().values().map(member).collect();
        devices.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let result = json!({"event_id": event_id, "timestamp": now(), "devices": devices});
        vec![out(topic::membership(&self.node, "get/result"), result)]
    }

    /// A Device or DeviceModel stored by MetaManager (`deleted`: removed from the store).
    pub async fn on_object(&self, kind: Kind, obj: &Value, deleted: bool) {
        let outs = match kind {
            Kind::Device => self.on_device(obj, deleted),
            Kind::DeviceModel if !deleted => self.on_model(obj),
            _ => Vec::new(),
        };
        self.publish(outs).await;
    }

    fn on_device(&self, obj: &Value, deleted: bool) -> Vec<Out> {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) else {
            return Vec::new();
        };
        let id = format!("{ns}/{name}");
        if deleted || device::node_of(obj) != Some(self.node.as_str()) {
            return self.remove(&id);
        }
        let rv: i64 = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let model = device::model_of(obj).unwrap_or_default().to_string();
        let types = self.model_types(ns, &model);
        let mut devices = self.devices();
        let added = !devices.contains_key(&id);
        let mut d = devices.get(&id).cloned().unwrap_or_else(|| DeviceRecord {
            id: id.clone(),
            name: name.to_string(),
            state: "unknown".into(),
            ..DeviceRecord::default()
        });
        if !added && rv != 0 && rv <= d.rv {
            return Vec::new();
        }
        d.description = device::description(obj).to_string();
        d.model = model;
        if !types.is_empty() {
            d.types = types;
        }
        let (twins, changes, rejected) =
            merge::cloud_desired(&d.twins, &device::desired(obj), &d.types, rv, now());
        for e in rejected {
            tracing::warn!(device = %id, error = %e, "desired value not applied");
        }
        d.twins = twins;
        d.rv = rv;
        if let Err(e) = self.store.save(&d) {
            tracing::error!(device = %id, error = %e, "device not stored");
            return Vec::new();
        }
        let mut outs = Vec::new();
        if added {
            let m = json!({"event_id": uuid::Uuid::new_v4().to_string(), "timestamp": now(),
                "added_devices": [member(&d)], "removed_devices": null});
            outs.push(out(topic::membership(&self.node, "updated"), m));
        }
        if !changes.is_empty() {
            outs.push(out(
                topic::device(&id, "twin/update/document"),
                merge::document(&changes, now()),
            ));
            outs.extend(self.changed_delta(&d));
        }
        devices.insert(id, d);
        outs
    }

    fn remove(&self, id: &str) -> Vec<Out> {
        let Some(d) = self.devices().remove(id) else {
            return Vec::new();
        };
        if let Err(e) = self.store.delete(id) {
            tracing::error!(device = %id, error = %e, "device not removed from the store");
        }
        let m = json!({"event_id": uuid::Uuid::new_v4().to_string(), "timestamp": now(),
            "added_devices": null, "removed_devices": [{"id": d.id, "name": d.name}]});
        vec![out(topic::membership(&self.node, "updated"), m)]
    }

    /// The property types of `<ns>/devicemodel/<model>`, if MetaManager has it.
    fn model_types(&self, ns: &str, model: &str) -> merge::Types {
        if model.is_empty() {
            return merge::Types::new();
        }
        let key = kedge_core::resource::object(ns, "devicemodel", model);
        match self.meta.get(&key) {
            Ok(Some(m)) => device::types(&m),
            _ => merge::Types::new(),
        }
    }

    fn on_model(&self, obj: &Value) -> Vec<Out> {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let types = device::types(obj);
        let mut devices = self.devices();
        for d in devices.values_mut() {
            if d.model == name && d.id.split('/').next() == Some(ns) && d.types != types {
                d.types = types.clone();
                if let Err(e) = self.store.save(d) {
                    tracing::error!(device = %d.id, error = %e, "device not stored");
                }
            }
        }
        Vec::new()
    }
}

/// The answer to a device update refused (malformed, unknown device, not stored).
fn refusal(id: &str, result_topic: String, event_id: &str, e: &TwinError) -> Vec<Out> {
    tracing::info!(device = %id, error = %e, "device update refused");
    vec![out(result_topic, merge::error_result(event_id, e, now()))]
}

/// The document (when something changed) and the delta of a stored twin update.
fn twin_outs(id: &str, changes: &Changes, delta: Option<Out>) -> Vec<Out> {
    let mut outs = Vec::new();
    if !changes.is_empty() {
        outs.push(out(
            topic::device(id, "twin/update/document"),
            merge::document(changes, now()),
        ));
    }
    outs.extend(delta);
    outs
}

/// A state a device may report, lower-cased.
fn state_of(state: &str) -> Result<String, TwinError> {
    let state = state.to_lowercase();
    if STATES.contains(&state.as_str()) {
        Ok(state)
    } else {
        Err(TwinError::BadRequest(format!(
            "state must be one of {STATES:?}"
        )))
    }
}

/// The state of a `state/update` payload.
fn parse_state(payload: &[u8]) -> Result<String, TwinError> {
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| TwinError::BadRequest(format!("the payload is not JSON: {e}")))?;
    state_of(v.get("state").and_then(Value::as_str).unwrap_or_default())
}

/// A report for the cloud and its coalescing key (a newer one of the same kind replaces it
/// while unsent).
fn report(d: &DeviceRecord, what: &str, content: Value) -> (Message, String) {
    let resource = format!("device/{}/{what}", d.id);
    let m = Message::new("twin", group::RESOURCE, op::UPDATE, &resource, content);
    (m, format!("{what}/{}", d.id))
}

/// `w` merged into `current` (the device as stored, or as an earlier write of the same group
/// left it): checked against the model, not yet stored. A twin write is reported to the cloud
/// when it changed a reported value, or, with `every`, when it carried one.
fn stage(current: Option<&DeviceRecord>, w: &Write, every: bool) -> Result<Staged, TwinError> {
    let d = current.ok_or_else(|| TwinError::UnknownDevice(w.id().to_string()))?;
    let mut next = d.clone();
    match w {
        Write::Twin { update, .. } => {
            let (twins, changes) = merge::device_update(&d.twins, update, &d.types, now())?;
            next.twins = twins;
            let moved = changes.values().any(|(old, new)| {
                old.as_ref().map(|t| t.actual_value()) != new.as_ref().map(|t| t.actual_value())
            }) || (every
                && update
                    .twin
                    .values()
                    .any(|t| t.as_ref().is_some_and(|t| t.actual.is_some())));
            let report = moved.then(|| {
                report(
                    &next,
                    "twin/edge_updated",
                    merge::edge_report(&next.twins, now()),
                )
            });
            Ok(Staged {
                record: next,
                report,
                outcome: Outcome::Twin(changes),
            })
        }
        Write::State { state, .. } => {
            next.state = state.clone();
            if next.state == "online" {
                next.last_online = kedge_core::clock::rfc3339();
            }
            let device =
                json!({"name": next.name, "state": next.state, "lastOnlineTime": next.last_online});
            let content = json!({"event_id": uuid::Uuid::new_v4().to_string(), "timestamp": now(),
                "device": device});
            Ok(Staged {
                report: Some(report(&next, "state/update", content)),
                record: next,
                outcome: Outcome::State(device),
            })
        }
    }
}

/// A device as membership messages list it.
fn member(d: &DeviceRecord) -> Value {
    let twin: serde_json::Map<String, Value> = d
        .twins
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                serde_json::to_value(t.to_msg()).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({"id": d.id, "name": d.name, "description": d.description, "state": d.state,
        "last_online": d.last_online, "twin": twin})
}

/// The retained delta of `d`, when some expected value differs from the actual one and the
/// differences are not the ones last published.
fn delta_out(
    d: &DeviceRecord,
    published: &mut HashMap<String, BTreeMap<String, String>>,
) -> Option<Out> {
    let delta = merge::delta(&d.twins);
    if published.get(&d.id) == Some(&delta) {
        return None;
    }
    published.insert(d.id.clone(), delta);
    merge::delta_message(&d.twins, now()).map(|payload| Out {
        topic: topic::device(&d.id, "twin/update/delta"),
        payload,
        retain: true,
    })
}

#[cfg(test)]
mod tests;
