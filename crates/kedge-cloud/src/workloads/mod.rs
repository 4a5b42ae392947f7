//! Workloads with zero set-up, for the embedded API (on a real cluster Kubernetes' own
//! controllers and scheduler do this, and these do not run): the scheduler and the Deployment,
//! ReplicaSet, DaemonSet, StatefulSet and Job controllers. Garbage collection by
//! ownerReferences is the API server's (`kedge-apiserver`'s `gc`).
//!
//! Each controller decides in pure code (`scheduler::fit` and each controller's `plan`) and
//! acts through kube-rs (`podctl` makes and removes pods for all); all share one set of caches
//! (`runtime`), each with its own queue.
//!
//! Edge autonomy: no controller here evicts pods from a NotReady node unless the workload asked
//! for it (`eviction`). An edge that loses its link keeps running its pods; they count as they
//! last reported until it is back.

pub mod daemonset;
pub mod deployment;
pub mod events;
pub mod eviction;
pub mod expect;
pub mod job;
pub mod podctl;
pub mod pods;
pub mod quantity;
pub mod replicaset;
pub mod runtime;
pub mod scheduler;
pub mod statefulset;
pub mod template;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::Store;

use pods::controller_of;
use runtime::{Key, Queue, cache, key_of, ready};

/// How often every object is reconciled even if nothing was heard of it.
const RESYNC: Duration = Duration::from_secs(30);

/// Each controller's queue.
#[derive(Clone)]
struct Queues {
    scheduler: Queue,
    replicasets: Queue,
    deployments: Queue,
    daemonsets: Queue,
    statefulsets: Queue,
    jobs: Queue,
    evictions: Queue,
}

impl Queues {
    /// Queues the controller of `meta` (a pod's or a ReplicaSet's owner), by its kind.
    fn owner_of(&self, meta: &ObjectMeta) {
        let Some(o) = controller_of(meta) else { return };
        let q = match o.kind.as_str() {
            "ReplicaSet" => &self.replicasets,
            "Deployment" => &self.deployments,
            "DaemonSet" => &self.daemonsets,
            "StatefulSet" => &self.statefulsets,
            "Job" => &self.jobs,
            _ => return,
        };
        q.add((meta.namespace.clone().unwrap_or_default(), o.name.clone()));
    }
}

/// Starts the scheduler and the workload controllers against `client`.
pub fn start(client: kube::Client) {
    let (scheduler, scheduler_rx) = Queue::new();
    let (replicasets, replicasets_rx) = Queue::new();
    let (deployments_q, deployments_rx) = Queue::new();
    let (daemonsets_q, daemonsets_rx) = Queue::new();
    let (statefulsets_q, statefulsets_rx) = Queue::new();
    let (jobs_q, jobs_rx) = Queue::new();
    let (evictions, evictions_rx) = Queue::new();
    let queues = Queues {
        scheduler,
        replicasets,
        deployments: deployments_q,
        daemonsets: daemonsets_q,
        statefulsets: statefulsets_q,
        jobs: jobs_q,
        evictions,
    };

    let q = queues.clone();
    let pods = cache(Api::<Pod>::all(client.clone()), move |p: &Pod| {
        if scheduler::pending(p) {
            q.scheduler.add(key_of(&p.metadata));
        }
        q.owner_of(&p.metadata);
        if p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(eviction::ANNOTATION))
        {
            q.evictions.add(key_of(&p.metadata));
        }
    });
    let q = queues.clone();
    let sets = cache(
        Api::<ReplicaSet>::all(client.clone()),
        move |rs: &ReplicaSet| {
            q.replicasets.add(key_of(&rs.metadata));
            q.owner_of(&rs.metadata);
        },
    );
    let deployments = own_cache::<Deployment>(&client, &queues.deployments);
    let daemonsets = own_cache::<DaemonSet>(&client, &queues.daemonsets);
    let statefulsets = own_cache::<StatefulSet>(&client, &queues.statefulsets);
    let jobs = own_cache::<Job>(&client, &queues.jobs);
    // A node that changes may take a pod that did not fit, and may gain or lose daemons.
    let (q, p2, d2) = (queues.clone(), pods.clone(), daemonsets.clone());
    let nodes = cache(Api::<Node>::all(client.clone()), move |n: &Node| {
        for p in p2.state().iter().filter(|p| scheduler::pending(p)) {
            q.scheduler.add(key_of(&p.metadata));
        }
        for k in eviction::on_node(&p2, n) {
            q.evictions.add(k);
        }
        for d in d2.state() {
            q.daemonsets.add(key_of(&d.metadata));
        }
    });

    let s = scheduler::Scheduler::new(client.clone(), pods.clone(), nodes.clone());
    spawn(
        "scheduler",
        queues.scheduler.clone(),
        scheduler_rx,
        vec![ready(&pods), ready(&nodes)],
        move |k| {
            let s = s.clone();
            async move { s.schedule(k).await }
        },
    );
    let c = replicaset::Controller::new(client.clone(), pods.clone(), sets.clone());
    runtime::resync(sets.clone(), queues.replicasets.clone(), RESYNC);
    spawn(
        "replicaset",
        queues.replicasets.clone(),
        replicasets_rx,
        vec![ready(&pods), ready(&sets)],
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    );
    let c = deployment::Controller::new(client.clone(), deployments.clone(), sets.clone());
    spawn(
        "deployment",
        queues.deployments.clone(),
        deployments_rx,
        vec![ready(&deployments), ready(&sets)],
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    );
    let c = daemonset::Controller::new(
        client.clone(),
        pods.clone(),
        nodes.clone(),
        daemonsets.clone(),
    );
    let wait = vec![ready(&pods), ready(&nodes), ready(&daemonsets)];
    spawn(
        "daemonset",
        queues.daemonsets.clone(),
        daemonsets_rx,
        wait,
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    );
    let c = statefulset::Controller::new(client.clone(), pods.clone(), statefulsets.clone());
    spawn(
        "statefulset",
        queues.statefulsets.clone(),
        statefulsets_rx,
        vec![ready(&pods), ready(&statefulsets)],
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    );
    let c = eviction::Evictor::new(client.clone(), pods.clone(), nodes.clone());
    spawn(
        "eviction",
        queues.evictions.clone(),
        evictions_rx,
        vec![ready(&pods), ready(&nodes)],
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    );
    let c = job::Controller::new(client, pods.clone(), jobs.clone());
    spawn(
        "job",
        queues.jobs.clone(),
        jobs_rx,
        vec![ready(&pods), ready(&jobs)],
        move |k| {
            let c = c.clone();
            async move { c.reconcile(k).await }
        },
    );
}

/// A cache of a workload kind whose changes queue the object itself, resynced every `RESYNC`.
fn own_cache<K>(client: &kube::Client, queue: &Queue) -> Store<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let q = queue.clone();
    let store = cache(Api::<K>::all(client.clone()), move |o: &K| {
        q.add(key_of(o.meta()))
    });
    runtime::resync(store.clone(), queue.clone(), RESYNC);
    store
}

fn spawn<F, Fut>(
    name: &'static str,
    queue: Queue,
    rx: tokio::sync::mpsc::UnboundedReceiver<Key>,
    wait: Vec<futures::future::BoxFuture<'static, ()>>,
    reconcile: F,
) where
    F: FnMut(Key) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<Duration>, kube::Error>> + Send + 'static,
{
    // Workloads run with the embedded API only: one cloud, always leading.
    let gate = crate::leader::Gate::default();
    tokio::spawn(runtime::run(name, (queue, rx), wait, gate, reconcile));
}
