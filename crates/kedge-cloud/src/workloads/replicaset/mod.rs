//! The ReplicaSet controller: keeps `spec.replicas` pods of the template running (creating the
//! missing, deleting the surplus in `pods::deletion_rank` order) and reports how many are ready
//! and available. What it just did is remembered until the pod cache shows it
//! (`Expectations`), so a stale cache never makes it create or delete twice.

mod expect;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::events::Recorder;
use super::pods::{
    controlled_by, deletion_rank, from_template, is_active, is_available, is_ready, owner_ref,
};
use super::runtime::{Key, key_of};
use expect::Expectations;

/// Pods created or deleted at once (each is an API call).
const BURST: usize = 16;

pub struct Controller {
    client: kube::Client,
    pub pods: Store<Pod>,
    pub sets: Store<ReplicaSet>,
    events: Recorder,
    expect: Mutex<Expectations>,
}

impl Controller {
    pub fn new(client: kube::Client, pods: Store<Pod>, sets: Store<ReplicaSet>) -> Arc<Controller> {
        Arc::new(Controller {
            events: Recorder::new(client.clone(), "replicaset-controller"),
            client,
            pods,
            sets,
            expect: Mutex::default(),
        })
    }

    fn expect(&self) -> std::sync::MutexGuard<'_, Expectations> {
        self.expect.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let Some(rs) = self
            .sets
            .state()
            .into_iter()
            .find(|r| key_of(&r.metadata) == key)
        else {
            self.expect().forget(&key);
            return Ok(None);
        };
        if rs.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let mine: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(key.0.as_str())
                    && controlled_by(&p.metadata, &uid)
            })
            .collect();
        let names: Vec<(String, bool)> = mine
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), is_active(p)))
            .collect();
        if !self.expect().met(&key, &names, std::time::Instant::now()) {
            return Ok(Some(Duration::from_secs(1)));
        }
        let mut active: Vec<Arc<Pod>> = mine.iter().filter(|p| is_active(p)).cloned().collect();
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        if active.len() < want {
            self.create(&rs, want - active.len(), &key).await?;
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            let surplus: Vec<Arc<Pod>> = active.drain(..active.len() - want).collect();
            self.delete(&rs, &surplus, &key).await?;
        }
        self.report(&rs, &mine).await
    }

    async fn create(&self, rs: &ReplicaSet, n: usize, key: &Key) -> Result<(), kube::Error> {
        let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
            return Ok(());
        };
        let pod = from_template(
            template,
            owner_ref("apps/v1", "ReplicaSet", &rs.metadata),
            None,
            &BTreeMap::new(),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..n)
            .map(|_| {
                let (api, pod) = (api.clone(), pod.clone());
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(BURST)
            .collect()
            .await;
        let mut created = Vec::new();
        for r in results {
            let p = r?;
            let name = p.metadata.name.clone().unwrap_or_default();
            self.events.normal(
                "ReplicaSet",
                "apps/v1",
                &rs.metadata,
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
            created.push(name);
        }
        self.expect()
            .created(key, created, std::time::Instant::now());
        Ok(())
    }

    async fn delete(
        &self,
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
        key: &Key,
    ) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        self.expect()
            .deleted(key, names.clone(), std::time::Instant::now());
        for chunk in names.chunks(BURST) {
            let dp = DeleteParams::default();
            let calls = chunk.iter().map(|n| api.delete(n, &dp));
            for (r, n) in futures::future::join_all(calls)
                .await
                .into_iter()
                .zip(chunk)
            {
                match r {
                    Ok(_) => self.events.normal(
                        "ReplicaSet",
                        "apps/v1",
                        &rs.metadata,
                        "SuccessfulDelete",
                        format!("Deleted pod: {n}"),
                    ),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
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
