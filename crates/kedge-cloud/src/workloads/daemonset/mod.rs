//! The DaemonSet controller: acts on `plan` (a pod bound straight to each node that should run
//! one, the others deleted) and writes the status kubectl's DESIRED/CURRENT/READY columns show.
//! Node changes (a new edge, a label moved) bring every DaemonSet back.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::podctl::PodControl;
use super::pods::{from_template, owned_by, owner_ref};
use super::runtime::{Key, lookup};
use super::template::template_hash;
use plan::{HASH_LABEL, daemon_tolerations};

pub struct Controller {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    pub sets: Store<DaemonSet>,
    ctl: PodControl,
}

impl Controller {
    pub fn new(
        client: kube::Client,
        pods: Store<Pod>,
        nodes: Store<Node>,
        sets: Store<DaemonSet>,
    ) -> Arc<Controller> {
        Arc::new(Controller {
            ctl: PodControl::new(
                client.clone(),
                "daemonset-controller",
                "DaemonSet",
                "apps/v1",
            ),
            client,
            pods,
            nodes,
            sets,
        })
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let Some(ds) = lookup(&self.sets, &key) else {
            self.ctl.forget(&key);
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let mine = owned_by(&self.pods, &ds.metadata);
        if !self.ctl.settled(&key, &mine) {
            return Ok(Some(Duration::from_secs(1)));
        }
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let hash = template_hash(&template, 0);
        let now = jiff::Timestamp::now().as_second();
        let p = plan::plan(&ds, &self.nodes.state(), &mine, &hash, now);
        if !p.create_on.is_empty() {
            let owner = owner_ref("apps/v1", "DaemonSet", &ds.metadata);
            let labels = BTreeMap::from([(HASH_LABEL.to_string(), hash.clone())]);
            let base = from_template(&template, owner, None, &labels);
            let pods = p
                .create_on
                .iter()
                .map(|node| {
                    let mut pod = base.clone();
                    let spec = pod.spec.get_or_insert_with(Default::default);
                    spec.node_name = Some(node.clone());
                    spec.tolerations
                        .get_or_insert_with(Vec::new)
                        .extend(daemon_tolerations());
                    pod
                })
                .collect();
            self.ctl.create(&ds.metadata, pods).await?;
        }
        if !p.delete.is_empty() {
            self.ctl.delete(&ds.metadata, p.delete).await?;
        }
        if ds.status.as_ref() != Some(&p.status) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.0);
            let body = json!({"status": p.status});
            api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(body))
                .await?;
        }
        Ok(None)
    }
}
