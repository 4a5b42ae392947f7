//! DeviceController: v1alpha2 Devices and their DeviceModels go to the node each Device's
//! `nodeSelector` names, through the same at-least-once, level-based delivery as pods (ACK,
//! ObjectSync, resync on connect); the edge's DeviceTwin turns them into membership and desired
//! twins. A Device that moves leaves its old node; a deleted one leaves its node. Edge reports
//! (`device/<ns>/<name>/twin/edge_updated`, `.../state/update`) are written to the Device's
//! `status` by `report`. The v1.14 device profile ConfigMap of each node is kept up to date
//! (`profile`), a moment after the changes that affect it.

pub mod profile;
pub mod report;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kedge_core::delivery::Outgoing;
use kedge_core::twin::device;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store};

use crate::cloudhub::downstream::{Downstream, SyncRecord};
use crate::objects::{deletion, outgoing, watch};

pub const GROUP: &str = "devices.kubeedge.io";
pub const VERSION: &str = "v1alpha2";

pub fn device_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, "Device"), "devices")
}

fn model_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "DeviceModel"),
        "devicemodels",
    )
}

struct Inner {
    devices: Store<DynamicObject>,
    models: Store<DynamicObject>,
    /// Where each Device (`ns/name`) was last sent.
    placed: Mutex<HashMap<String, String>>,
    downstream: Arc<Downstream>,
    client: kube::Client,
    /// (namespace, node) whose profile ConfigMap needs rewriting.
    dirty: Mutex<BTreeSet<(String, String)>>,
    wake: tokio::sync::Notify,
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

    fn model(&self, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let r = reflector::ObjectRef::new_with(name, model_resource()).within(ns);
        self.models.get(&r)
    }

    /// Devices on `node` other than `except`.
    fn devices_on(&self, node: &str, except: &str) -> Vec<Arc<DynamicObject>> {
        self.devices
            .state()
            .into_iter()
            .filter(|d| node_of(d).as_deref() == Some(node) && key(d) != except)
            .collect()
    }

    /// The Device and its model, as deliveries.
    fn with_model(&self, d: &DynamicObject, delete: bool) -> Vec<Outgoing> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let model = model_name(d).and_then(|m| self.model(&ns, m));
        let own = outgoing(d, "device", delete);
        let model = model.and_then(|m| outgoing(m.as_ref(), "devicemodel", delete));
        own.into_iter().chain(model).collect()
    }

    /// The profile of `node` in `ns` needs rewriting.
    fn mark(&self, ns: &str, node: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ns.to_string(), node.to_string()));
        self.wake.notify_one();
    }

    fn on_device(&self, d: &DynamicObject, deleted: bool) {
        let k = key(d);
        let to = if deleted { None } else { node_of(d) };
        let from = self.placed().get(&k).cloned();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        for node in from.iter().chain(to.iter()) {
            self.mark(ns, node);
        }
        if let Some(from) = from.filter(|f| Some(f) != to.as_ref()) {
            self.leave(d, &from, &k);
        }
        match to {
            Some(node) => {
                for out in self.with_model(d, false) {
                    self.downstream.offer(&node, out);
                }
                self.placed().insert(k, node);
            }
            None => {
                self.placed().remove(&k);
            }
        }
    }

    /// `d` leaves `node`: its deletion, and its model's unless another device there uses it.
    fn leave(&self, d: &DynamicObject, node: &str, k: &str) {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let model = model_name(d);
        let still_used = self
            .devices_on(node, k)
            .iter()
            .any(|o| o.metadata.namespace.as_deref() == Some(ns) && model_name(o) == model);
        for out in self.with_model(d, true) {
            let is_model = out.msg.route.resource.contains("/devicemodel/");
            if !(is_model && still_used) {
                self.downstream.offer(node, out);
            }
        }
    }

    fn on_model(&self, m: &DynamicObject, deleted: bool) {
        let ns = m.metadata.namespace.as_deref();
        let name = m.metadata.name.as_deref();
        let nodes: HashSet<String> = self
            .devices
            .state()
            .iter()
            .filter(|d| d.metadata.namespace.as_deref() == ns && model_name(d) == name)
            .filter_map(|d| node_of(d))
            .collect();
        for node in nodes {
            self.mark(ns.unwrap_or_default(), &node);
            if let Some(out) = outgoing(m, "devicemodel", deleted) {
                self.downstream.offer(&node, out);
            }
        }
    }
}

/// Rewrites dirty profiles, a moment after each burst of changes. (The watches hold `Inner` for
/// the life of the process, and so does this.)
async fn write_profiles(i: Arc<Inner>) {
    loop {
        i.wake.notified().await;
        // Coalesce a burst (1,000 devices created) into one write per profile.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if i.devices.wait_until_ready().await.is_err() || i.models.wait_until_ready().await.is_err()
        {
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

impl Inner {
    /// Creates, updates or deletes `device-profile-config-<node>` in `ns`.
    async fn write_profile(&self, ns: &str, node: &str) -> Result<(), kube::Error> {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let name = profile::name(node);
        let mut devices: Vec<Arc<DynamicObject>> = self
            .devices
            .state()
            .into_iter()
            .filter(|d| {
                d.metadata.namespace.as_deref() == Some(ns) && node_of(d).as_deref() == Some(node)
            })
            .collect();
        if devices.is_empty() {
            return match api.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other.map(|_| ()),
            };
        }
        devices.sort_by_key(|d| d.metadata.name.clone());
        let models: Vec<Arc<DynamicObject>> = self
            .models
            .state()
            .into_iter()
            .filter(|m| m.metadata.namespace.as_deref() == Some(ns))
            .collect();
        // Whole objects: a DynamicObject's `data` leaves out its metadata.
        let whole = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
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
    pub fn start(client: kube::Client, downstream: Arc<Downstream>) -> DeviceController {
        let (dr, mr) = (device_resource(), model_resource());
        let dw = reflector::store::Writer::new(dr.clone());
        let mw = reflector::store::Writer::new(mr.clone());
        let inner = Arc::new(Inner {
            devices: dw.as_reader(),
            models: mw.as_reader(),
            placed: Mutex::default(),
            downstream,
            client: client.clone(),
            dirty: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        });
        tokio::spawn(write_profiles(inner.clone()));
        watch(
            Api::all_with(client.clone(), &mr),
            mw,
            inner.clone(),
            Inner::on_model,
        );
        watch(
            Api::all_with(client, &dr),
            dw,
            inner.clone(),
            Inner::on_device,
        );
        DeviceController(inner)
    }

    /// Offers `node` its devices and models, and deletions for what it acknowledged and should
    /// no longer have. Waits (bounded) for the first full lists, as `bound::resync` does.
    pub async fn resync(&self, node: &str, records: &[SyncRecord]) {
        let i = &self.0;
        let ready = async {
            i.devices.wait_until_ready().await.is_ok() && i.models.wait_until_ready().await.is_ok()
        };
        if !tokio::time::timeout(std::time::Duration::from_secs(30), ready)
            .await
            .unwrap_or(false)
        {
            tracing::warn!(
                node,
                "device resync skipped: Devices or DeviceModels could not be listed (are the KubeEdge CRDs installed?)"
            );
            return;
        }
        let mut desired = HashSet::new();
        for d in i.devices_on(node, "") {
            i.placed().insert(key(&d), node.to_string());
            for out in i.with_model(&d, false) {
                desired.insert(out.uid.clone());
                i.downstream.offer(node, out);
            }
        }
        let ours = |k: &str| matches!(k, "device" | "devicemodel");
        for r in records
            .iter()
            .filter(|r| ours(&r.kind) && !desired.contains(&r.uid))
        {
            i.downstream.offer(node, deletion(r));
        }
    }

    /// The Device `namespace/name` as the controller's watch last saw it.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let r = reflector::ObjectRef::new_with(name, device_resource()).within(namespace);
        self.0.devices.get(&r)
    }
}
