//! The StatefulSet controller: acts on `plan` (pods `<name>-<ordinal>` with their stable
//! hostname and `serviceName` subdomain) and writes the status `kubectl rollout status` reads.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

use super::podctl::{PodControl, write_status};
use super::pods::{from_template, owner_ref};
use super::runtime::Key;
use super::template::REVISION_LABEL;
use super::template::template_hash;

pub struct Controller {
    client: kube::Client,
    pods: Store<Pod>,
    pub sets: Store<StatefulSet>,
    ctl: PodControl,
}

impl Controller {
    pub fn new(
        client: kube::Client,
        pods: Store<Pod>,
        sets: Store<StatefulSet>,
    ) -> Arc<Controller> {
        Arc::new(Controller {
            ctl: PodControl::new(
                client.clone(),
                "statefulset-controller",
                "StatefulSet",
                "apps/v1",
            ),
            client,
            pods,
            sets,
        })
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let (sts, mine) = match self.ctl.owner_and_pods(&self.sets, &self.pods, &key) {
            Ok(found) => found,
            Err(again) => return Ok(again),
        };
        let spec = sts.spec.clone().unwrap_or_default();
        let hash = template_hash(&spec.template, 0);
        let p = plan::plan(&sts, &mine, &hash, jiff::Timestamp::now().as_second());
        if !p.create.is_empty() {
            let owner = owner_ref("apps/v1", "StatefulSet", &sts.metadata);
            let pods = p
                .create
                .iter()
                .map(|i| {
                    let name = format!("{}-{i}", key.1);
                    let labels = BTreeMap::from([
                        (REVISION_LABEL.to_string(), hash.clone()),
                        (
                            "statefulset.kubernetes.io/pod-name".to_string(),
                            name.clone(),
                        ),
                        ("apps.kubernetes.io/pod-index".to_string(), i.to_string()),
                    ]);
                    let mut pod =
                        from_template(&spec.template, owner.clone(), Some(name.clone()), &labels);
                    let s = pod.spec.get_or_insert_with(Default::default);
                    s.hostname = Some(name);
                    s.subdomain = spec.service_name.clone().filter(|n| !n.is_empty());
                    pod
                })
                .collect();
            self.ctl.create(&sts.metadata, pods).await?;
        }
        if !p.delete.is_empty() {
            self.ctl.delete(&sts.metadata, p.delete).await?;
        }
        write_status::<StatefulSet, _>(&self.client, &key, sts.status.as_ref(), &p.status).await?;
        Ok(None)
    }
}
