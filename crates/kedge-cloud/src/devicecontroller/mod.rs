//! DeviceController: Devices and their DeviceModels (read as v1beta1, the stored version; the
//! embedded API converts v1alpha2 ones) go to the node each Device's `nodeName` names, through
//! the same at-least-once, level-based delivery as pods (ACK, ObjectSync, resync on connect);
//! the edge's DeviceTwin turns them into membership and desired twins. A Device that moves
//! leaves its old node; a deleted one leaves its node. Each Device has a DeviceStatus
//! (`status`). Edge reports (`device/<ns>/<name>/twin/edge_updated`, `.../state/update`) are
//! written to it, and to the Device's `status` for devices used through v1alpha2, by `report`. The v1.14 device profile ConfigMap of each node is kept up to date
//! (`profile`), a moment after the changes that affect it. Indexes (devices by node, devices by
//! model) keep each change, and each node's resync, proportional to that node's devices.

pub mod profile;
pub(crate) mod ready;
pub mod report;
pub mod status;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use kedge_core::delivery::Outgoing;
use kedge_core::resource::Kind;
use kedge_core::twin::device;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store};

use crate::cloudhub::downstream::Downstream;
use crate::edgecontroller::resync::Placer;
use crate::objects::{outgoing, watch, watch_with_done};
use crate::placement;

pub const GROUP: &str = "devices.kubeedge.io";
pub const VERSION: &str = kedge_core::devices::V1BETA1;

pub fn device_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, "Device"), "devices")
}

fn model_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "DeviceModel"),
        "devicemodels",
    )
}

/// (namespace, model name).
type ModelKey = (String, String);

/// Devices by the node they name and by their model, kept from the watch.
#[derive(Default)]
struct Index {
    /// Device keys (`ns/name`) by node.
    on_node: HashMap<String, BTreeSet<String>>,
    /// Device keys by (namespace, model).
    by_model: HashMap<ModelKey, BTreeSet<String>>,
    /// Each indexed device: its node and model.
    devices: HashMap<String, (Option<String>, Option<ModelKey>)>,
}

impl Index {
    fn remove(&mut self, k: &str) {
        let Some((node, model)) = self.devices.remove(k) else {
            return;
        };
        if let Some(n) = node
            && let Some(set) = self.on_node.get_mut(&n)
        {
            set.remove(k);
            if set.is_empty() {
                self.on_node.remove(&n);
            }
        }
        if let Some(m) = model
            && let Some(set) = self.by_model.get_mut(&m)
        {
            set.remove(k);
            if set.is_empty() {
                self.by_model.remove(&m);
            }
        }
    }

    fn add(&mut self, d: &DynamicObject) {
        let k = key(d);
        self.remove(&k);
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let node = node_of(d);
        let model = model_name(d).map(|m| (ns, m.to_string()));
        if let Some(n) = &node {
            self.on_node.entry(n.clone()).or_default().insert(k.clone());
        }
        if let Some(m) = &model {
            self.by_model
                .entry(m.clone())
                .or_default()
                .insert(k.clone());
        }
        self.devices.insert(k, (node, model));
    }

    fn on(&self, node: &str) -> Vec<String> {
        self.on_node
            .get(node)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Nodes with a device of `ns` that uses `model`.
    fn nodes_using(&self, ns: &str, model: &str) -> BTreeSet<String> {
        let users = self.by_model.get(&(ns.to_string(), model.to_string()));
        users
            .into_iter()
            .flatten()
            .filter_map(|k| self.devices.get(k)?.0.clone())
            .collect()
    }
}

struct Inner {
    devices: Store<DynamicObject>,
    models: Store<DynamicObject>,
    statuses: Store<DynamicObject>,
    /// Devices (`ns/name`) whose DeviceStatus needs a look (created, or removed with them).
    unchecked: Mutex<BTreeSet<String>>,
    check: tokio::sync::Notify,
    index: Mutex<Index>,
    /// Where each Device (`ns/name`) was last sent.
    placed: Mutex<HashMap<String, String>>,
    downstream: Arc<Downstream>,
    client: kube::Client,
    /// (namespace, node) whose profile ConfigMap needs rewriting.
    dirty: Mutex<BTreeSet<(String, String)>>,
    wake: tokio::sync::Notify,
    /// Devices (`ns/name`) whose `Ready` condition needs a look.
    unsettled: Mutex<BTreeSet<String>>,
    settle: tokio::sync::Notify,
    /// Profiles, conditions and DeviceStatuses are written while this is open (the leader
    /// among replicas); the work waits meanwhile.
    gate: crate::leader::Gate,
}

pub struct DeviceController(Arc<Inner>);

fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

fn node_of(o: &DynamicObject) -> Option<String> {
    device::node_of(&o.data).map(String::from)
}

fn model_name(o: &DynamicObject) -> Option<&str> {
    device::model_of(&o.data)
}

impl Inner {
    fn placed(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.placed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn model(&self, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let r = reflector::ObjectRef::new_with(name, model_resource()).within(ns);
        self.models.get(&r)
    }

    fn device(&self, key: &str) -> Option<Arc<DynamicObject>> {
        let (ns, name) = key.split_once('/')?;
        let r = reflector::ObjectRef::new_with(name, device_resource()).within(ns);
        self.devices.get(&r)
    }

    /// Devices on `node`.
    fn devices_on(&self, node: &str) -> Vec<Arc<DynamicObject>> {
        let keys = self.index().on(node);
        keys.iter().filter_map(|k| self.device(k)).collect()
    }

    /// The Device and its model, as deliveries.
    fn with_model(&self, d: &DynamicObject, delete: bool) -> Vec<Outgoing> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let model = model_name(d).and_then(|m| self.model(&ns, m));
        let own = outgoing(d, "device", delete);
        let model = model.and_then(|m| outgoing(m.as_ref(), "devicemodel", delete));
        // The model before the device, the device before its model's deletion: a stock
        // edgecore's DMI worker needs the model to register the device.
        match delete {
            false => model.into_iter().chain(own).collect(),
            true => own.into_iter().chain(model).collect(),
        }
    }

    /// The profile of `node` in `ns` needs rewriting.
    fn mark(&self, ns: &str, node: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ns.to_string(), node.to_string()));
        self.wake.notify_one();
    }

    /// `keys`' Ready conditions need a look.
    fn unsettle(&self, keys: impl IntoIterator<Item = String>) {
        self.unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keys);
        self.settle.notify_one();
    }

    /// `keys`' DeviceStatuses need a look.
    fn recheck(&self, keys: impl IntoIterator<Item = String>) {
        self.unchecked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keys);
        self.check.notify_one();
    }

    fn status(&self, key: &str) -> Option<Arc<DynamicObject>> {
        let (ns, name) = key.split_once('/')?;
        let r = reflector::ObjectRef::new_with(name, status::status_resource()).within(ns);
        self.statuses.get(&r)
    }

    fn on_status(&self, s: &DynamicObject, _deleted: bool) {
        if self.device(&key(s)).is_none() {
            self.recheck([key(s)]);
        }
    }

    fn statuses_listed(&self) {
        self.recheck(self.statuses.state().iter().map(|s| key(s)));
    }

    fn on_device(&self, d: &DynamicObject, deleted: bool) {
        let k = key(d);
        self.recheck([k.clone()]);
        if !deleted {
            self.unsettle([k.clone()]);
        }
        {
            let mut index = self.index();
            match deleted {
                true => index.remove(&k),
                false => index.add(d),
            }
        }
        let to = if deleted { None } else { node_of(d) };
        let from = self.placed().get(&k).cloned();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        for node in from.iter().chain(to.iter()) {
            self.mark(ns, node);
        }
        let moved = placement::device_move(from.as_deref(), to.as_deref());
        if let Some(leave) = moved.leave {
            self.leave(d, leave);
        }
        match moved.to {
            Some(node) => {
                for out in self.with_model(d, false) {
                    self.downstream.offer(node, out);
                }
                self.placed().insert(k, node.to_string());
            }
            None => {
                self.placed().remove(&k);
            }
        }
    }

    /// `d` leaves `node`: its deletion, and its model's unless another device there uses it.
    fn leave(&self, d: &DynamicObject, node: &str) {
        let ns = d.metadata.namespace.as_deref();
        let others = self.devices_on(node);
        let models = others
            .iter()
            .filter(|o| o.metadata.namespace.as_deref() == ns && key(o) != key(d))
            .map(|o| model_name(o));
        let model_leaves = placement::model_leaves(model_name(d), models);
        for out in self.with_model(d, true) {
            let is_model = kedge_core::resource::ObjectRef::parse(&out.msg.route.resource)
                .is_ok_and(|r| r.kind() == Kind::DeviceModel);
            if model_leaves || !is_model {
                self.downstream.offer(node, out);
            }
        }
    }

    fn on_model(&self, m: &DynamicObject, deleted: bool) {
        let ns = m.metadata.namespace.as_deref().unwrap_or_default();
        let name = m.metadata.name.as_deref().unwrap_or_default();
        let (nodes, users) = {
            let index = self.index();
            let users = index.by_model.get(&(ns.to_string(), name.to_string()));
            (
                index.nodes_using(ns, name),
                users.cloned().unwrap_or_default(),
            )
        };
        self.unsettle(users);
        for node in nodes {
            self.mark(ns, &node);
            if let Some(out) = outgoing(m, "devicemodel", deleted) {
                self.downstream.offer(&node, out);
            }
        }
    }

    /// A (re)list of Devices is complete: the index is rebuilt from it (a relist after a
    /// broken watch reports no deletions).
    fn devices_listed(&self) {
        let mut fresh = Index::default();
        for d in self.devices.state() {
            fresh.add(&d);
        }
        let keys: Vec<String> = fresh.devices.keys().cloned().collect();
        *self.index() = fresh;
        self.recheck(keys.clone());
        self.unsettle(keys);
    }
}

/// Looks at every device each time this replica becomes the leader.
async fn on_leading(i: Arc<Inner>, mut gate: crate::leader::Gate) {
    loop {
        gate.changed().await;
        if gate.open() {
            i.everything();
        }
    }
}

/// Rewrites dirty profiles, a moment after each burst of changes. (The watches hold `Inner` for
/// the life of the process, and so does this.)
async fn write_profiles(i: Arc<Inner>) {
    loop {
        if !i.after_burst(&i.wake).await {
            continue;
        }
        let dirty = std::mem::take(&mut *i.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        for (ns, node) in dirty {
            if let Err(e) = i.write_profile(&ns, &node).await {
                tracing::warn!(namespace = %ns, node, error = %e, "device profile not written; retrying");
                i.mark(&ns, &node);
            }
        }
    }
}

/// Brings the `Ready` condition of the devices that changed up to date, a moment after each
/// burst of changes.
async fn show_ready(i: Arc<Inner>) {
    loop {
        if !i.after_burst(&i.settle).await {
            continue;
        }
        let keys = std::mem::take(&mut *i.unsettled.lock().unwrap_or_else(|p| p.into_inner()));
        for k in keys {
            let Some(d) = i.device(&k) else { continue };
            let ns = d.metadata.namespace.as_deref().unwrap_or_default();
            let model = model_name(&d);
            let exists = model.is_some_and(|m| i.model(ns, m).is_some());
            let why = ready::missing(ns, model, exists);
            let Some(condition) = ready::needed(&d.data, why.as_deref()) else {
                continue;
            };
            match &why {
                Some(why) => tracing::info!(device = %k, reason = %why, "device not in effect yet"),
                None => tracing::info!(device = %k, "device in effect"),
            }
            let name = d.metadata.name.as_deref().unwrap_or_default();
            let api: Api<DynamicObject> =
                Api::namespaced_with(i.client.clone(), ns, &device_resource());
            let p = serde_json::json!({"metadata": {"resourceVersion": d.metadata.resource_version},
                "status": {"conditions": ready::with(&d.data, condition)}});
            // A conflict (the Device changed meanwhile) or a failed write: look again after
            // the next burst, on the watch's fresher copy.
            if let Err(e) = report::patch(&api, name, &p).await {
                tracing::debug!(device = %k, error = %crate::objects::brief(&e), "device condition not written; retrying");
                i.unsettle([k.clone()]);
            }
        }
    }
}

/// Gives every Device its DeviceStatus and removes those whose Device is gone, a moment after
/// each burst of changes.
async fn keep_statuses(i: Arc<Inner>) {
    loop {
        if !i.after_burst(&i.check).await || i.statuses.wait_until_ready().await.is_err() {
            continue;
        }
        let keys = std::mem::take(&mut *i.unchecked.lock().unwrap_or_else(|p| p.into_inner()));
        for k in keys {
            let (d, s) = (i.device(&k), i.status(&k));
            let owned = |d: &DynamicObject, s: &DynamicObject| {
                status::owner_uid(s) == d.metadata.uid.as_deref()
            };
            let result = match (d, s) {
                (Some(d), None) => status::create(&i.client, &d).await,
                (Some(d), Some(s)) if !owned(&d, &s) => match status::remove(&i.client, &s).await {
                    Ok(()) => status::create(&i.client, &d).await,
                    Err(e) => Err(e),
                },
                (None, Some(s)) => status::remove(&i.client, &s).await,
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(device = %k, error = %crate::objects::brief(&e), "DeviceStatus not kept; retrying");
                i.recheck([k]);
            }
        }
    }
}

impl Inner {
    /// Waits for `notify`, then a moment more, so a burst of changes (1,000 devices created) is
    /// handled at once; false unless Devices and DeviceModels are listed.
    async fn after_burst(&self, notify: &tokio::sync::Notify) -> bool {
        notify.notified().await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.gate.open()
            && self.devices.wait_until_ready().await.is_ok()
            && self.models.wait_until_ready().await.is_ok()
    }

    /// Everything needs a look: this replica just became the leader, and the one that led may
    /// have stopped half-way.
    fn everything(&self) {
        let devices = self.devices.state();
        for d in &devices {
            if let Some(node) = node_of(d) {
                self.mark(d.metadata.namespace.as_deref().unwrap_or_default(), &node);
            }
        }
        let keys: Vec<String> = devices.iter().map(|d| key(d)).collect();
        let statuses = self.statuses.state();
        self.recheck(keys.iter().cloned().chain(statuses.iter().map(|s| key(s))));
        self.unsettle(keys);
    }

    /// Creates, updates or deletes `device-profile-config-<node>` in `ns`.
    async fn write_profile(&self, ns: &str, node: &str) -> Result<(), kube::Error> {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let name = profile::name(node);
        let mut devices: Vec<Arc<DynamicObject>> = self
            .devices_on(node)
            .into_iter()
            .filter(|d| d.metadata.namespace.as_deref() == Some(ns))
            .collect();
        if devices.is_empty() {
            return match api.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other.map(|_| ()),
            };
        }
        devices.sort_by_key(|d| d.metadata.name.clone());
        let used: BTreeSet<&str> = devices.iter().filter_map(|d| model_name(d)).collect();
        let models: Vec<Arc<DynamicObject>> =
            used.iter().filter_map(|m| self.model(ns, m)).collect();
        // Whole objects (a DynamicObject's `data` leaves out its metadata), in v1alpha2: the
        // profile is KubeEdge v1.14's.
        let whole = |o: &DynamicObject| {
            let v = serde_json::to_value(o).unwrap_or_default();
            let kind = o.types.as_ref().map_or("", |t| t.kind.as_str());
            kedge_core::devices::convert(kind, &v, kedge_core::devices::V1ALPHA2).unwrap_or(v)
        };
        let models: Vec<(String, serde_json::Value)> = models
            .iter()
            .filter_map(|m| Some((m.metadata.name.clone()?, whole(m))))
            .collect();
        let by_name = models.iter().map(|(n, m)| (n.clone(), m)).collect();
        let devices: Vec<serde_json::Value> = devices.iter().map(|d| whole(d)).collect();
        let values: Vec<&serde_json::Value> = devices.iter().collect();
        let text = profile::build(&values, &by_name).to_string();
        if text.len() > profile::MAX_BYTES {
            tracing::warn!(
                namespace = ns,
                node,
                bytes = text.len(),
                "device profile over 1 MiB: not written (too many devices on one node for a ConfigMap)"
            );
            return Ok(());
        }
        match api.get_opt(&name).await? {
            Some(cm) if cm.data.as_ref().and_then(|d| d.get(profile::KEY)) == Some(&text) => Ok(()),
            Some(_) => {
                let p = serde_json::json!({"data": {profile::KEY: text}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .map(|_| ())
            }
            None => {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": ns, "labels": {"kedge.io/device-profile": "true"}},
                    "data": {profile::KEY: text}}))
                .map_err(kube::Error::SerdeError)?;
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        }
    }
}

impl DeviceController {
    pub fn start(
        client: kube::Client,
        downstream: Arc<Downstream>,
        gate: crate::leader::Gate,
    ) -> DeviceController {
        let (dr, mr, sr) = (
            device_resource(),
            model_resource(),
            status::status_resource(),
        );
        let dw = reflector::store::Writer::new(dr.clone());
        let mw = reflector::store::Writer::new(mr.clone());
        let sw = reflector::store::Writer::new(sr.clone());
        let inner = Arc::new(Inner {
            devices: dw.as_reader(),
            models: mw.as_reader(),
            statuses: sw.as_reader(),
            unchecked: Mutex::default(),
            check: tokio::sync::Notify::new(),
            index: Mutex::default(),
            placed: Mutex::default(),
            downstream,
            client: client.clone(),
            dirty: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            unsettled: Mutex::default(),
            settle: tokio::sync::Notify::new(),
            gate: gate.clone(),
        });
        tokio::spawn(on_leading(inner.clone(), gate));
        tokio::spawn(write_profiles(inner.clone()));
        tokio::spawn(show_ready(inner.clone()));
        tokio::spawn(keep_statuses(inner.clone()));
        watch_with_done(
            Api::all_with(client.clone(), &sr),
            sw,
            inner.clone(),
            Inner::on_status,
            Inner::statuses_listed,
        );
        watch(
            Api::all_with(client.clone(), &mr),
            mw,
            inner.clone(),
            Inner::on_model,
        );
        watch_with_done(
            Api::all_with(client, &dr),
            dw,
            inner.clone(),
            Inner::on_device,
            Inner::devices_listed,
        );
        DeviceController(inner)
    }

    /// The DeviceStatus `namespace/name` as the controller's watch last saw it.
    pub fn cached_status(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.0.status(&format!("{namespace}/{name}"))
    }

    /// The Device `namespace/name` as the controller's watch last saw it.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let r = reflector::ObjectRef::new_with(name, device_resource()).within(namespace);
        self.0.devices.get(&r)
    }
}

impl Placer for DeviceController {
    fn name(&self) -> &'static str {
        "Devices and DeviceModels (are the KubeEdge CRDs installed?)"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Device, Kind::DeviceModel]
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        let i = &self.0;
        async move {
            i.devices.wait_until_ready().await.is_ok() && i.models.wait_until_ready().await.is_ok()
        }
        .boxed()
    }

    fn desired(&self, node: &str) -> Vec<Outgoing> {
        let i = &self.0;
        let mut out = Vec::new();
        for d in i.devices_on(node) {
            i.placed().insert(key(&d), node.to_string());
            out.extend(i.with_model(&d, false));
        }
        // Devices share models: offer each once.
        let mut seen = std::collections::HashSet::new();
        out.retain(|o| seen.insert(o.uid.clone()));
        out
    }
}
