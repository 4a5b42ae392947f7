//! The EdgeApplication controller (KubeEdge's apps.kubeedge.io/v1alpha1): keeps the Deployments
//! `render` makes — created when missing, put back when edited, removed when their group is no
//! longer targeted (the EdgeApplication's own deletion takes them through garbage collection) —
//! and reports each one's availability. Runs in both modes: on a real cluster Kubernetes'
//! Deployment controller runs what it renders.

pub mod image;
pub mod render;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::ApiResource;
use kube::runtime::reflector::Store;
use serde_json::{Value, json};

use crate::workloads::pods::controlled_by;
use crate::workloads::runtime::{self, Key, Queue, key_of};

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.kubeedge.io", "v1alpha1", "EdgeApplication"),
        "edgeapplications",
    )
}

struct Controller {
    client: kube::Client,
    apps: Store<DynamicObject>,
    deployments: Store<Deployment>,
}

pub fn start(client: kube::Client, gate: crate::leader::Gate) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource());
    let apps = runtime::cache_with(api, resource(), move |a: &DynamicObject| {
        q.add(key_of(&a.metadata));
    });
    let q = queue.clone();
    let deployments = runtime::cache(
        Api::<Deployment>::all(client.clone()),
        move |d: &Deployment| {
            let owner = d
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "EdgeApplication" && o.controller == Some(true));
            if let Some(o) = owner {
                q.add((
                    d.metadata.namespace.clone().unwrap_or_default(),
                    o.name.clone(),
                ));
            }
        },
    );
    runtime::resync(
        apps.clone(),
        queue.clone(),
        std::time::Duration::from_secs(30),
    );
    let c = Arc::new(Controller {
        client,
        apps: apps.clone(),
        deployments: deployments.clone(),
    });
    let wait = vec![runtime::ready(&apps), runtime::ready(&deployments)];
    tokio::spawn(runtime::run(
        "edgeapplication",
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
        let Some(app) = runtime::lookup_with(&self.apps, &key, resource()) else {
            return Ok(None);
        };
        if app.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let value = serde_json::to_value(app.as_ref()).map_err(kube::Error::SerdeError)?;
        let rendered = match render::render(&value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(app = %key.1, namespace = %key.0, error = %e, "EdgeApplication not rendered");
                return Ok(None);
            }
        };
        let uid = app.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Deployment>> = self
            .deployments
            .state()
            .into_iter()
            .filter(|d| controlled_by(&d.metadata, &uid))
            .collect();
        let pp = PatchParams::default();
        for want in &rendered {
            self.keep(want, &owned).await?;
        }
        let names: Vec<&str> = rendered
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        for d in &owned {
            let (ns, name) = key_of(&d.metadata);
            if !names.contains(&name.as_str()) {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let current: Vec<(String, Value)> = owned
            .iter()
            .map(|d| {
                (
                    d.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(d.as_ref()).unwrap_or_default(),
                )
            })
            .collect();
        let status = render::status(&rendered, &current);
        if value.get("status") != Some(&status) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &key.0, &resource());
            api.patch_status(&key.1, &pp, &Patch::Merge(json!({"status": status})))
                .await?;
        }
        Ok(None)
    }

    /// Creates the rendered Deployment, or puts it back as rendered when it was changed.
    async fn keep(&self, want: &Value, owned: &[Arc<Deployment>]) -> Result<(), kube::Error> {
        let ns = want["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = want["metadata"]["name"].as_str().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let desired: Deployment =
            serde_json::from_value(want.clone()).map_err(kube::Error::SerdeError)?;
        let existing = owned
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name));
        match existing {
            None => match api.create(&PostParams::default(), &desired).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()), // the cache will show it
                Err(e) => Err(e),
            },
            Some(cur) => {
                let have = serde_json::to_value(cur.as_ref()).unwrap_or_default();
                let same = render::contains(&have["spec"], &want["spec"])
                    && render::contains(&have["metadata"]["labels"], &want["metadata"]["labels"]);
                if same {
                    return Ok(());
                }
                let mut next = desired;
                next.metadata.resource_version = cur.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &next)
                    .await
                    .map(|_| ())
            }
        }
    }
}
