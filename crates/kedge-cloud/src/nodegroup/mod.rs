//! The NodeGroup controller (KubeEdge's apps.kubeedge.io/v1alpha1): keeps each group's member
//! nodes labelled (`members` decides) and its status. Runs in both modes: on a real cluster too,
//! EdgeApplications need it.

pub mod members;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::runtime::reflector::Store;
use serde_json::json;

use crate::workloads::runtime::{self, Key, Queue, key_of};

pub const BELONGING_TO: &str = "apps.kubeedge.io/belonging-to";

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.kubeedge.io", "v1alpha1", "NodeGroup"),
        "nodegroups",
    )
}

struct Controller {
    client: kube::Client,
    groups: Store<DynamicObject>,
    nodes: Store<Node>,
}

pub fn start(client: kube::Client, gate: crate::leader::Gate) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource());
    let groups = runtime::cache_with(api, resource(), move |g: &DynamicObject| {
        q.add(key_of(&g.metadata));
    });
    // A node that changes may join or leave any group, or carry a stale label.
    let (q, g2) = (queue.clone(), groups.clone());
    let nodes = runtime::cache(Api::<Node>::all(client.clone()), move |n: &Node| {
        for g in g2.state() {
            q.add(key_of(&g.metadata));
        }
        if let Some(group) = n.metadata.labels.as_ref().and_then(|l| l.get(BELONGING_TO)) {
            q.add((String::new(), group.clone()));
        }
    });
    let c = Arc::new(Controller {
        client,
        groups: groups.clone(),
        nodes: nodes.clone(),
    });
    let wait = vec![runtime::ready(&groups), runtime::ready(&nodes)];
    tokio::spawn(runtime::run(
        "nodegroup",
        (queue, rx),
        wait,
        gate,
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    ));
}

impl Controller {
    async fn reconcile(&self, key: Key) -> Result<Option<std::time::Duration>, kube::Error> {
        let group = runtime::lookup_with(&self.groups, &key, resource());
        let value = group
            .as_ref()
            .map(|g| serde_json::to_value(g.as_ref()).unwrap_or_default());
        let d = members::decide(&key.1, value.as_ref(), &self.nodes.state());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let pp = PatchParams::default();
        for n in &d.label {
            let body = json!({"metadata": {"labels": {BELONGING_TO: key.1}}});
            nodes.patch(n, &pp, &Patch::Merge(body)).await?;
        }
        for n in &d.unlabel {
            let body = json!({"metadata": {"labels": {BELONGING_TO: null}}});
            nodes.patch(n, &pp, &Patch::Merge(body)).await?;
        }
        if let Some(v) = value
            && v.get("status") != Some(&d.status)
        {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource());
            let body = json!({"status": d.status});
            api.patch_status(&key.1, &pp, &Patch::Merge(body)).await?;
        }
        Ok(None)
    }
}
