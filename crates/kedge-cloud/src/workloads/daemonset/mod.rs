//! The DaemonSet controller: acts on `plan` (a pod bound straight to each node that should run
//! one, the others deleted) and writes the status kubectl's DESIRED/CURRENT/READY columns show.
//! Node changes (a new edge, a label moved) bring every DaemonSet back.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::Store;

use super::podctl::{PodControl, write_status};
use super::pods::{from_template, owner_ref};
use super::runtime::Key;
use super::template::{REVISION_LABEL, template_hash};
use plan::daemon_tolerations;

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
        let (ds, mine) = match self.ctl.owner_and_pods(&self.sets, &self.pods, &key) {
            Ok(found) => found,
            Err(again) => return Ok(again),
        };
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
            let labels = BTreeMap::from([(REVISION_LABEL.to_string(), hash.clone())]);
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
        write_status::<DaemonSet, _>(&self.client, &key, ds.status.as_ref(), &p.status).await?;
        Ok(None)
    }
}
