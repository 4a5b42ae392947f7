//! The ReplicaSet controller: keeps `spec.replicas` pods of the template running (creating the
//! missing, deleting the surplus in `pods::deletion_rank` order) and reports how many are ready
//! and available.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::podctl::PodControl;
use super::pods::{deletion_rank, from_template, is_active, is_available, is_ready, owner_ref};
use super::runtime::{Key, key_of, lookup};

pub struct Controller {
    client: kube::Client,
    pub pods: Store<Pod>,
    pub sets: Store<ReplicaSet>,
    ctl: PodControl,
}

impl Controller {
    pub fn new(client: kube::Client, pods: Store<Pod>, sets: Store<ReplicaSet>) -> Arc<Controller> {
        Arc::new(Controller {
            ctl: PodControl::new(
                client.clone(),
                "replicaset-controller",
                "ReplicaSet",
                "apps/v1",
            ),
            client,
            pods,
            sets,
        })
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let Some(rs) = lookup(&self.sets, &key) else {
            self.ctl.forget(&key);
            return Ok(None);
        };
        if rs.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let mine = super::pods::owned_by(&self.pods, &rs.metadata);
        if !self.ctl.settled(&key, &mine) {
            return Ok(Some(Duration::from_secs(1)));
        }
        let mut active: Vec<Arc<Pod>> = mine.iter().filter(|p| is_active(p)).cloned().collect();
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        if active.len() < want
            && let Some(t) = rs.spec.as_ref().and_then(|s| s.template.as_ref())
        {
            let owner = owner_ref("apps/v1", "ReplicaSet", &rs.metadata);
            let pod = from_template(t, owner, None, &BTreeMap::new());
            self.ctl
                .create(&rs.metadata, vec![pod; want - active.len()])
                .await?;
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            let surplus = active[..active.len() - want]
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            self.ctl.delete(&rs.metadata, surplus).await?;
        }
        self.report(&rs, &mine).await
    }

    /// Writes the status when it changed; a pod ready but not yet available for
    /// `minReadySeconds` brings the ReplicaSet back when it will be.
    async fn report(
        &self,
        rs: &ReplicaSet,
        mine: &[Arc<Pod>],
    ) -> Result<Option<Duration>, kube::Error> {
        let spec = rs.spec.clone().unwrap_or_default();
        let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
        let now = jiff::Timestamp::now().as_second();
        let active: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
        let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let status = ReplicaSetStatus {
            replicas: active.len() as i32,
            fully_labeled_replicas: Some(count(&|p| {
                let l = p.metadata.labels.clone().unwrap_or_default();
                template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })),
            ready_replicas: Some(count(&|p| is_ready(p))),
            available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
            observed_generation: rs.metadata.generation,
            conditions: None,
            terminating_replicas: None,
        };
        let pending = count(&|p| is_ready(p)) > count(&|p| is_available(p, min_ready, now));
        if rs.status.as_ref() != Some(&status) {
            let (ns, name) = key_of(&rs.metadata);
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        }
        Ok(pending.then(|| Duration::from_secs(min_ready.max(1) as u64)))
    }
}
