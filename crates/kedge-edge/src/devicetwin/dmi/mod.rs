//! DMI, KubeEdge's Device Management Interface: the edge serves `DeviceManagerService` to
//! mappers on a unix socket (`server`) and calls each mapper's `DeviceMapperService`
//! (`client`), chosen by the device's `spec.protocol.protocolName`.
//!
//! What each mapper should hold is derived from the edge store (the Devices bound to this node
//! and their models, merged and converted by `convert`) and compared with what it took, which
//! is recorded (`records`): `plan` gives the calls still owed. So a desired value is stored
//! first, then sent as `UpdateDevice`, retried with back-off until the mapper takes it, across
//! edge and mapper restarts; a mapper that registers later gets everything in its answer.
//! Each device's standing — taken by its mapper, or pending and why — is reported to the cloud,
//! which shows it as the Device's `Mapped` condition.

pub mod authority;
pub mod client;
pub mod convert;
pub mod incoming;
pub mod plan;
pub mod records;
pub mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Maps encode in key order (BTreeMaps), so the same content gives the same bytes, and hash.
use kedge_core::delivery::hash_bytes;
use kedge_core::envelope::{Message, group, op};
use kedge_proto::dmi;
use prost::Message as _;
use serde_json::{Value, json};

use crate::edgehub::outbox::Outbox;
use crate::metamanager::MetaStore;
use client::{Call, CallError};
use plan::{Action, Kind, Slot};
use records::{Mapper, Records};

/// A device's standing with its mapper, as the cloud is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Taken,
    Pending(String),
}

/// One DMI device bound to this node, converted with its model.
struct Entry {
    protocol: String,
    device: Arc<dmi::Device>,
    model_id: String,
    model: Arc<dmi::DeviceModel>,
    /// Hashes of the encoded messages: what the mapper took is compared by them.
    hashes: (u64, u64),
}

/// What became of a stored Device: sent to a mapper, or held back and why.
enum Known {
    Ready(Entry),
    Blocked(String),
}

/// What the store says each mapper should hold (a view of the cache).
#[derive(Default)]
struct Wanted {
    hashes: BTreeMap<Slot, u64>,
    devices: HashMap<String, Arc<dmi::Device>>,
    models: HashMap<String, Arc<dmi::DeviceModel>>,
    /// DMI devices that cannot be sent yet, and why.
    blocked: BTreeMap<String, String>,
}

/// The converted devices, kept from one reconciliation to the next: a changed Device is
/// converted again alone; a changed model converts everything again (models change rarely).
#[derive(Default)]
struct Cache {
    /// By device id (`ns/name`); `None` until the first full conversion.
    known: Option<HashMap<String, Known>>,
    /// Meta keys (`<ns>/device/<name>`) of the Devices changed since.
    dirty: BTreeSet<String>,
    /// The next reconciliation walks every device (after a registration or a failed call);
    /// otherwise one woken by Device changes looks at those devices only.
    full: bool,
}

pub struct Dmi {
    node: String,
    meta: Arc<MetaStore>,
    records: Records,
    outbox: Arc<Outbox>,
    mappers: Mutex<HashMap<String, Mapper>>,
    /// One reconciliation or registration at a time.
    busy: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    /// The standing last reported per device (`ns/name`).
    told: Mutex<HashMap<String, Standing>>,
    cache: Mutex<Cache>,
}

#[derive(Debug, thiserror::Error)]
pub enum DmiError {
    #[error("DMI records: {0}")]
    Db(#[from] rusqlite::Error),
}

impl Dmi {
    pub fn open(
        node: &str,
        db: crate::db::Db,
        meta: Arc<MetaStore>,
        outbox: Arc<Outbox>,
    ) -> Result<Arc<Dmi>, DmiError> {
        let records = Records::open_in(db)?;
        let mappers = records
            .mappers()?
            .into_iter()
            .map(|m| (m.protocol.clone(), m))
            .collect();
        Ok(Arc::new(Dmi {
            node: node.to_string(),
            meta,
            records,
            outbox,
            mappers: Mutex::new(mappers),
            busy: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            told: Mutex::default(),
            cache: Mutex::default(),
        }))
    }

    fn mappers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Mapper>> {
        self.mappers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Device or DeviceModel changed in the store (`key`: its meta key).
    pub fn changed(&self, kind: kedge_core::resource::Kind, key: &str) {
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match kind {
                kedge_core::resource::Kind::Device => {
                    c.dirty.insert(key.to_string());
                }
                _ => c.known = None,
            }
        }
        self.wake.notify_one();
    }

    fn stored(&self, key: &str) -> Option<Value> {
        self.meta.get(key).ok().flatten()
    }

    /// What each mapper should hold, from the cache brought up to date: of every device, or
    /// (`Some` scope) only of the devices changed since the last look — enough when nothing
    /// else changed, and cheap for a node with many devices. A device that left this node's
    /// mappers makes it a full look (its model may leave with it).
    fn wanted(&self) -> (Wanted, Option<BTreeSet<String>>) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let dirty = std::mem::take(&mut c.dirty);
        let mut scope = (!std::mem::take(&mut c.full)).then(BTreeSet::new);
        match c.known.as_mut() {
            Some(known) => {
                for key in dirty {
                    let Some(id) = device_id(&key) else { continue };
                    let was = known.remove(&id);
                    let now = self.convert(&key);
                    // A device that leaves, or moves to another mapper, may take its model
                    // along: that is for a full look to decide.
                    if was.is_some() && protocol(now.as_ref()) != protocol(was.as_ref()) {
                        scope = None;
                    }
                    if let Some(k) = now {
                        known.insert(id.clone(), k);
                    }
                    if let Some(s) = scope.as_mut() {
                        s.insert(id);
                    }
                }
            }
            None => {
                let keys = self.meta.keys("device").unwrap_or_default();
                let known = keys
                    .iter()
                    .filter_map(|key| Some((device_id(key)?, self.convert(key)?)))
                    .collect();
                c.known = Some(known);
                scope = None;
            }
        }
        let mut w = Wanted::default();
        let known = c.known.iter().flatten();
        for (id, k) in known.filter(|(id, _)| scope.as_ref().is_none_or(|s| s.contains(*id))) {
            match k {
                Known::Blocked(why) => {
                    w.blocked.insert(id.clone(), why.clone());
                }
                Known::Ready(e) => {
                    let slot = |kind, key: &str| Slot {
                        kind,
                        key: key.to_string(),
                        protocol: e.protocol.clone(),
                    };
                    w.hashes.insert(slot(Kind::Device, id), e.hashes.0);
                    w.hashes.insert(slot(Kind::Model, &e.model_id), e.hashes.1);
                    w.devices.insert(id.clone(), e.device.clone());
                    w.models.insert(e.model_id.clone(), e.model.clone());
                }
            }
        }
        (w, scope)
    }

    /// What every mapper should hold (a registration's answer needs all of its protocol).
    fn wanted_all(&self) -> (Wanted, Option<BTreeSet<String>>) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).full = true;
        self.wanted()
    }

    /// What the mappers took, of the devices in `scope` (and their models) or of all.
    fn synced(&self, w: &Wanted, scope: &Option<BTreeSet<String>>) -> BTreeMap<Slot, u64> {
        match scope {
            None => self.records.synced(),
            // Models only as far as these devices want them: what leaves is a full look's.
            Some(ids) => self.records.synced_where(|s| match s.kind {
                Kind::Device => ids.contains(&s.key),
                Kind::Model => w.hashes.contains_key(s),
            }),
        }
    }

    /// The stored Device `key` as its mapper gets it; `None` for a device that is not a DMI
    /// device of this node (gone, bound elsewhere, or speaking MQTT itself).
    fn convert(&self, key: &str) -> Option<Known> {
        let obj = self.stored(key)?;
        let d = convert::v1beta1("Device", &obj).ok()?;
        let protocol = convert::protocol_of(&d).to_string();
        let bound = kedge_core::twin::device::node_of(&d) == Some(self.node.as_str());
        if protocol.is_empty() || !bound {
            return None;
        }
        Some(match self.entry(&d, protocol) {
            Ok(e) => Known::Ready(e),
            Err(why) => Known::Blocked(why.to_string()),
        })
    }

    fn entry(&self, d: &Value, protocol: String) -> Result<Entry, convert::ConvertError> {
        let (ns, model_name) = convert::model_key(d)?;
        let model_id = format!("{ns}/{model_name}");
        let model = self
            .stored(&kedge_core::resource::object(
                &ns,
                "devicemodel",
                &model_name,
            ))
            .ok_or_else(|| convert::ConvertError::NoModel(model_id.clone()))?;
        let model = convert::v1beta1("DeviceModel", &model)?;
        let (device, model) = (convert::device(d, &model)?, convert::model(&model));
        Ok(Entry {
            hashes: (
                hash_bytes(&device.encode_to_vec()),
                hash_bytes(&model.encode_to_vec()),
            ),
            device: Arc::new(device),
            model: Arc::new(model),
            protocol,
            model_id,
        })
    }

    /// A mapper registers: it is recorded (replacing the protocol's earlier mapper) and, with
    /// `with_data`, answered with its devices and their models (parallel lists, as edgecore),
    /// which are then what it holds.
    pub async fn register(
        &self,
        m: Mapper,
        with_data: bool,
    ) -> Result<dmi::MapperRegisterResponse, DmiError> {
        let _busy = self.busy.lock().await;
        let (w, _) = self.wanted_all();
        let mut answer = dmi::MapperRegisterResponse::default();
        let mut took = BTreeMap::new();
        if with_data {
            for (slot, h) in w.hashes.iter().filter(|(s, _)| s.protocol == m.protocol) {
                took.insert(slot.clone(), *h);
            }
            for (slot, _) in took.iter().filter(|(s, _)| s.kind == Kind::Device) {
                let Some(d) = w.devices.get(&slot.key) else {
                    continue;
                };
                let model_id = format!("{}/{}", d.namespace, device_model(d));
                let Some(model) = w.models.get(&model_id) else {
                    continue;
                };
                answer.device_list.push(d.as_ref().clone());
                answer.model_list.push(model.as_ref().clone());
            }
        }
        self.records.register(&m, &took)?;
        tracing::info!(mapper = %m.name, protocol = %m.protocol, socket = %m.address,
            devices = answer.device_list.len(), "mapper registered");
        self.mappers().insert(m.protocol.clone(), m);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).full = true;
        drop(_busy);
        self.wake.notify_one();
        Ok(answer)
    }

    /// Makes the calls still owed; true when some failed (to be tried again).
    async fn reconcile(&self) -> bool {
        let _busy = self.busy.lock().await;
        let (w, scope) = self.wanted();
        let synced = self.synced(&w, &scope);
        let registered: HashMap<String, Mapper> = self.mappers().clone();
        let actions = plan::plan(&w.hashes, &synced, |p| registered.contains_key(p));
        let mut failed: HashMap<String, String> = HashMap::new();
        for a in actions {
            let slot = match &a {
                Action::Add(s) | Action::Update(s) | Action::Remove(s) => s.clone(),
            };
            if failed.contains_key(&slot.protocol) {
                continue;
            }
            let Some(mapper) = registered.get(&slot.protocol) else {
                continue;
            };
            let Some(c) = call_for(&a, &w) else { continue };
            match client::call(&mapper.address, c).await {
                Ok(()) => {
                    let h = match a {
                        Action::Remove(_) => None,
                        _ => w.hashes.get(&slot).copied(),
                    };
                    if let Err(e) = self.records.took(&slot, h) {
                        tracing::warn!(error = %e, "DMI record not written");
                    }
                }
                Err(e) => {
                    tracing::info!(mapper = %mapper.name, error = %e, "mapper call failed; retrying");
                    failed.insert(slot.protocol.clone(), refusal(&mapper.name, &e));
                }
            }
        }
        let synced = self.synced(&w, &scope);
        self.tell(&w, &synced, &registered, &failed);
        if !failed.is_empty() {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).full = true;
        }
        !failed.is_empty()
    }

    /// Tells the cloud each DMI device's standing, when it changed.
    fn tell(
        &self,
        w: &Wanted,
        synced: &BTreeMap<Slot, u64>,
        registered: &HashMap<String, Mapper>,
        failed: &HashMap<String, String>,
    ) {
        let mut now: BTreeMap<String, Standing> = w
            .blocked
            .iter()
            .map(|(id, why)| (id.clone(), Standing::Pending(why.clone())))
            .collect();
        for (slot, h) in w.hashes.iter().filter(|(s, _)| s.kind == Kind::Device) {
            let standing = if synced.get(slot) == Some(h) {
                Standing::Taken
            } else if let Some(why) = failed.get(&slot.protocol) {
                Standing::Pending(why.clone())
            } else if !registered.contains_key(&slot.protocol) {
                Standing::Pending(format!(
                    "no mapper for protocol {} has registered on node {}",
                    slot.protocol, self.node
                ))
            } else {
                continue; // on its way
            };
            now.insert(slot.key.clone(), standing);
        }
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        for (id, standing) in now {
            if told.get(&id) == Some(&standing) {
                continue;
            }
            let content = match &standing {
                Standing::Taken => json!({"status": "True", "reason": "Taken",
                    "message": "the device's mapper has it"}),
                Standing::Pending(why) => {
                    tracing::info!(device = %id, reason = %why, "device pending");
                    json!({"status": "False", "reason": "Pending", "message": why})
                }
            };
            let resource = format!("device/{id}/mapper");
            let m = Message::new("twin", group::RESOURCE, op::UPDATE, &resource, content);
            match self.outbox.push(m, Some(&format!("mapper/{id}"))) {
                Ok(_) => {
                    told.insert(id, standing);
                }
                Err(e) => tracing::warn!(device = %id, error = %e, "device standing not queued"),
            }
        }
    }

    /// Reconciles whenever the store or the mappers change, and again with back-off while
    /// calls fail.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let failed = self.reconcile().await;
            if failed {
                let _ = tokio::time::timeout(backoff, self.wake.notified()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            } else {
                backoff = Duration::from_millis(500);
                self.wake.notified().await;
            }
        }
    }
}

/// The protocol of a device that goes to a mapper (`None`: blocked, or not a DMI device).
fn protocol(k: Option<&Known>) -> Option<&str> {
    match k {
        Some(Known::Ready(e)) => Some(e.protocol.as_str()),
        _ => None,
    }
}

/// `ns/name` of the meta key `<ns>/device/<name>`.
fn device_id(key: &str) -> Option<String> {
    let mut parts = key.splitn(3, '/');
    let (ns, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    (kind == "device").then(|| format!("{ns}/{name}"))
}

fn device_model(d: &dmi::Device) -> &str {
    d.spec
        .as_ref()
        .map_or("", |s| s.device_model_reference.as_str())
}

fn refusal(mapper: &str, e: &CallError) -> String {
    format!("mapper {mapper}: {e}")
}

/// The call an action makes.
fn call_for(a: &Action, w: &Wanted) -> Option<Call> {
    let split = |key: &str| {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        (name.to_string(), ns.to_string())
    };
    Some(match a {
        Action::Add(s) if s.kind == Kind::Device => {
            Call::Register(w.devices.get(&s.key)?.as_ref().clone())
        }
        Action::Update(s) if s.kind == Kind::Device => {
            Call::Update(w.devices.get(&s.key)?.as_ref().clone())
        }
        Action::Add(s) => Call::CreateModel(w.models.get(&s.key)?.as_ref().clone()),
        Action::Update(s) => Call::UpdateModel(w.models.get(&s.key)?.as_ref().clone()),
        Action::Remove(s) if s.kind == Kind::Device => {
            let (name, namespace) = split(&s.key);
            Call::RemoveDevice { name, namespace }
        }
        Action::Remove(s) => {
            let (name, namespace) = split(&s.key);
            Call::RemoveModel { name, namespace }
        }
    })
}
