//! Creating and deleting a controller's pods: in bursts (each is an API call), with the events
//! `kubectl describe` shows (`SuccessfulCreate`, `SuccessfulDelete`, `FailedCreate`), recorded
//! in the controller's `Expectations` until its cache shows them. One piece for every
//! workload controller.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;

use super::events::Recorder;
use super::expect::Expectations;
use super::pods::owned_by;
use super::runtime::{Key, key_of, lookup};

/// Pods created or deleted at once.
const BURST: usize = 16;

/// An owner and the pods it controls.
pub type Owned<K> = (Arc<K>, Vec<Arc<Pod>>);

pub struct PodControl {
    client: kube::Client,
    events: Recorder,
    /// The owner's kind and apiVersion, for its events.
    kind: (&'static str, &'static str),
    expect: Mutex<Expectations>,
}

impl PodControl {
    pub fn new(
        client: kube::Client,
        component: &'static str,
        kind: &'static str,
        api_version: &'static str,
    ) -> PodControl {
        PodControl {
            events: Recorder::new(client.clone(), component),
            client,
            kind: (kind, api_version),
            expect: Mutex::default(),
        }
    }

    fn expect(&self) -> std::sync::MutexGuard<'_, Expectations> {
        self.expect.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the cache shows what was last done for `owner` (see `Expectations::met`);
    /// `pods`: the owner's pods in the cache.
    pub fn settled(&self, owner: &Key, pods: &[Arc<Pod>]) -> bool {
        if !self.expect().waiting(owner) {
            return true; // nothing done lately: no need to look
        }
        let seen: std::collections::HashMap<String, bool> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    super::pods::is_active(p),
                )
            })
            .collect();
        self.expect().met(owner, &seen, Instant::now())
    }

    pub fn forget(&self, owner: &Key) {
        self.expect().forget(owner);
    }

    /// What every pod-owning controller starts a reconcile with: the owner from its cache and
    /// the pods it controls; `Err(again)` when there is nothing to do now (`None`: the owner is
    /// gone or going) or not yet (`Some`: what was last done is not in the cache yet).
    pub fn owner_and_pods<K>(
        &self,
        owners: &Store<K>,
        pods: &Store<Pod>,
        key: &Key,
    ) -> Result<Owned<K>, Option<Duration>>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        let Some(owner) = lookup(owners, key) else {
            self.forget(key);
            return Err(None);
        };
        if owner.meta().deletion_timestamp.is_some() {
            return Err(None);
        }
        let mine = owned_by(pods, owner.meta());
        if !self.settled(key, &mine) {
            return Err(Some(Duration::from_secs(1)));
        }
        Ok((owner, mine))
    }

    /// Creates `pods` for `owner`; a name already taken (a StatefulSet's pod still going) is
    /// skipped. The first other failure is returned after the rest were tried.
    pub async fn create(&self, owner: &ObjectMeta, pods: Vec<Pod>) -> Result<(), kube::Error> {
        let key = key_of(owner);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(pods)
            .map(|pod| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(BURST)
            .collect()
            .await;
        let (kind, av) = self.kind;
        let mut created = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.metadata.name.unwrap_or_default();
                    self.events.normal(
                        kind,
                        av,
                        owner,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                    created.push(name);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.events.warning(
                        kind,
                        av,
                        owner,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    first_err.get_or_insert(e);
                }
            }
        }
        self.expect().created(&key, created, Instant::now());
        first_err.map_or(Ok(()), Err)
    }

    /// Deletes the named pods of `owner` (gone already: fine).
    pub async fn delete(&self, owner: &ObjectMeta, names: Vec<String>) -> Result<(), kube::Error> {
        let key = key_of(owner);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        self.expect().deleted(&key, names.clone(), Instant::now());
        let (kind, av) = self.kind;
        let dp = DeleteParams::default();
        for chunk in names.chunks(BURST) {
            let calls = chunk.iter().map(|n| api.delete(n, &dp));
            for (r, n) in futures::future::join_all(calls)
                .await
                .into_iter()
                .zip(chunk)
            {
                match r {
                    Ok(_) => self.events.normal(
                        kind,
                        av,
                        owner,
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
}

/// Writes a workload's status when it differs from what the object shows.
pub async fn write_status<K, S>(
    client: &kube::Client,
    key: &Key,
    shown: Option<&S>,
    status: &S,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if shown == Some(status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &key.0);
    let body = serde_json::json!({"status": status});
    api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(body))
        .await
        .map(|_| ())
}
