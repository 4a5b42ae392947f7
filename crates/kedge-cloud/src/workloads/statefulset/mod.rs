//! The StatefulSet controller: acts on `plan` (pods `<name>-<ordinal>` with their stable
//! hostname and `serviceName` subdomain) and writes the status `kubectl rollout status` reads.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::podctl::PodControl;
use super::pods::{from_template, owned_by, owner_ref};
use super::runtime::{Key, lookup};
use super::template::template_hash;
use plan::HASH_LABEL;

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
        let Some(sts) = lookup(&self.sets, &key) else {
            self.ctl.forget(&key);
            return Ok(None);
        };
        if sts.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let mine = owned_by(&self.pods, &sts.metadata);
        if !self.ctl.settled(&key, &mine) {
            return Ok(Some(Duration::from_secs(1)));
        }
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
                        (HASH_LABEL.to_string(), hash.clone()),
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
        if sts.status.as_ref() != Some(&p.status) {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.0);
            let body = json!({"status": p.status});
            api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(body))
                .await?;
        }
        Ok(None)
    }
}
