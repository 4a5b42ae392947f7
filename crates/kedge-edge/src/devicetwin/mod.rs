//! DeviceTwin: the node's devices and their twins, kept in SQLite (`store`) and spoken about over
//! MQTT (`$hw/events/...`, KubeEdge's topics and payloads). Everything is stored before it is
//! published or reported:
//! - from the cloud (Device and DeviceModel objects, via MetaManager): desired values become
//!   `expected`; changes go out as `twin/update/document` and a retained `twin/update/delta`, so a
//!   device that (re)subscribes gets the latest delta;
//! - from devices (`twin/update`, `state/update`): checked against the model, stored, answered on
//!   `.../result`, and reported to the cloud through the outbox (one coalescing key per device,
//!   each report carrying every reported value, so the latest report is all the cloud needs);
//! - `twin/get` and `membership/get` are answered from the store, with or without the cloud.

pub mod dmi;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kedge_core::envelope::{Message, group, op};
use kedge_core::resource::Kind;
use kedge_core::twin::merge::{self, Changes};
use kedge_core::twin::topic::{self, Inbound as Topic};
use kedge_core::twin::{self as twin, TwinError, device};
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

pub struct DeviceTwin {
    node: String,
    store: TwinStore,
    meta: Arc<MetaStore>,
    devices: Mutex<HashMap<String, DeviceRecord>>,
    /// The delta last published per device: a delta goes out when it changes, not on every
    /// report that leaves it as it was (the retained copy keeps it for late subscribers).
    published: Mutex<HashMap<String, BTreeMap<String, String>>>,
    bus: EventBus,
    outbox: Arc<Outbox>,
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
            store,
            meta,
            devices: Mutex::new(devices),
            published: Mutex::default(),
            bus,
            outbox,
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

    /// Handles one MQTT message, then acknowledges it (after storing what it carried).
    pub async fn on_mqtt(&self, m: Inbound) {
        let outs = match topic::parse(&m.topic) {
            Some(Topic::TwinUpdate { id }) => self.twin_update(&id, &m.payload),
            Some(Topic::TwinGet { id }) => self.twin_get(&id, &m.payload),
            Some(Topic::StateUpdate { id }) => self.state_update(&id, &m.payload),
            Some(Topic::MembershipGet { node }) if node == self.node => {
                self.membership_get(&m.payload)
            }
            _ => Vec::new(),
        };
        self.bus.ack(&m).await;
        self.publish(outs).await;
    }

    fn twin_update(&self, id: &str, payload: &[u8]) -> Vec<Out> {
        let result_topic = topic::device(id, "twin/update/result");
        let event_id = twin::event_id_of(payload);
        match self.apply_update(id, payload) {
            Ok((changes, delta)) => {
                let now = now();
                let mut outs = vec![out(
                    result_topic,
                    merge::update_result(&event_id, &changes, now),
                )];
                if !changes.is_empty() {
                    outs.push(out(
                        topic::device(id, "twin/update/document"),
                        merge::document(&changes, now),
                    ));
                }
                outs.extend(delta);
                outs
            }
            Err(e) => {
                tracing::info!(device = id, error = %e, "twin update refused");
                vec![out(result_topic, merge::error_result(&event_id, &e, now()))]
            }
        }
    }

    /// Stores a device's update and queues its report; returns what changed and the delta.
    fn apply_update(&self, id: &str, payload: &[u8]) -> Result<(Changes, Option<Out>), TwinError> {
        let mut devices = self.devices();
        let d = devices
            .get_mut(id)
            .ok_or_else(|| TwinError::UnknownDevice(id.to_string()))?;
        let update = twin::parse_update(payload)?;
        let (twins, changes) = merge::device_update(&d.twins, &update, &d.types, now())?;
        let mut next = d.clone();
        next.twins = twins;
        self.store
            .save(&next)
            .map_err(|e| TwinError::BadRequest(format!("not stored: {e}")))?;
        *d = next;
        if changes.values().any(|(old, new)| {
            old.as_ref().map(|t| t.actual_value()) != new.as_ref().map(|t| t.actual_value())
        }) {
            self.report(d, "twin/edge_updated", merge::edge_report(&d.twins, now()));
        }
        Ok((changes, self.changed_delta(d)))
    }

    /// Queues a report for the cloud; a newer one of the same kind replaces it while unsent.
    fn report(&self, d: &DeviceRecord, what: &str, content: Value) {
        let resource = format!("device/{}/{what}", d.id);
        let m = Message::new("twin", group::RESOURCE, op::UPDATE, &resource, content);
        if let Err(e) = self.outbox.push(m, Some(&format!("{what}/{}", d.id))) {
            tracing::warn!(device = %d.id, error = %e, "device report not queued");
        }
    }

    /// A mapper's report (DMI `ReportDeviceStatus`): the reported values, handled as the same
    /// device's `twin/update` (stored, then reported to the cloud, the document and delta
    /// published); refused as a whole when the device is not on this node or a value is wrong.
    pub async fn report_from_mapper(
        &self,
        id: &str,
        reported: &[(String, String)],
    ) -> Result<(), TwinError> {
        let twin: serde_json::Map<String, Value> = reported
            .iter()
            .map(|(p, v)| (p.clone(), json!({"actual": {"value": v}})))
            .collect();
        let payload = json!({"event_id": "", "timestamp": now(), "twin": twin});
        let (changes, delta) = self.apply_update(id, payload.to_string().as_bytes())?;
        let mut outs = Vec::new();
        if !changes.is_empty() {
            outs.push(out(
                topic::device(id, "twin/update/document"),
                merge::document(&changes, now()),
            ));
        }
        outs.extend(delta);
        self.publish(outs).await;
        Ok(())
    }

    /// A mapper's state report (DMI `ReportDeviceStates`), handled as `state/update`.
    pub fn state_from_mapper(&self, id: &str, state: &str) -> Result<(), TwinError> {
        self.apply_state(id, json!({"state": state}).to_string().as_bytes())
            .map(|_| ())
    }

    fn twin_get(&self, id: &str, payload: &[u8]) -> Vec<Out> {
        let event_id = twin::event_id_of(payload);
        let result = match self.devices().get(id) {
            Some(d) => merge::get_result(&event_id, &d.twins, now()),
            None => merge::error_result(&event_id, &TwinError::UnknownDevice(id.into()), now()),
        };
        vec![out(topic::device(id, "twin/get/result"), result)]
    }

    fn state_update(&self, id: &str, payload: &[u8]) -> Vec<Out> {
        let result_topic = topic::device(id, "state/update/result");
        let event_id = twin::event_id_of(payload);
        match self.apply_state(id, payload) {
            Ok(device) => vec![out(
                result_topic,
                json!({"event_id": event_id, "timestamp": now(), "device": device}),
            )],
            Err(e) => vec![out(result_topic, merge::error_result(&event_id, &e, now()))],
        }
    }

    fn apply_state(&self, id: &str, payload: &[u8]) -> Result<Value, TwinError> {
        let v: Value = serde_json::from_slice(payload)
            .map_err(|e| TwinError::BadRequest(format!("the payload is not JSON: {e}")))?;
        let state = v
            .get("state")
            .and_then(Value::as_str)
            .map(str::to_lowercase)
            .filter(|s| STATES.contains(&s.as_str()))
            .ok_or_else(|| TwinError::BadRequest(format!("state must be one of {STATES:?}")))?;
        let mut devices = self.devices();
        let d = devices
            .get_mut(id)
            .ok_or_else(|| TwinError::UnknownDevice(id.to_string()))?;
        let mut next = d.clone();
        next.state = state;
        if next.state == "online" {
            next.last_online = kedge_core::clock::rfc3339();
        }
        self.store
            .save(&next)
            .map_err(|e| TwinError::BadRequest(format!("not stored: {e}")))?;
        *d = next;
        let device = json!({"name": d.name, "state": d.state, "lastOnlineTime": d.last_online});
        let content = json!({"event_id": uuid::Uuid::new_v4().to_string(), "timestamp": now(), "device": device});
        self.report(d, "state/update", content);
        Ok(device)
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
