//! Workloads with zero set-up, for the embedded API (on a real cluster Kubernetes' own
//! controllers and scheduler do this, and these do not run): the scheduler, the Deployment and
//! ReplicaSet controllers. Garbage collection by ownerReferences is the API server's
//! (`kedge-apiserver`'s `gc`).
//!
//! Each controller decides in pure code (`scheduler::fit`, `deployment::plan`, `pods`) and acts
//! through kube-rs; all share one set of caches (`runtime`), each with its own queue.
//!
//! Edge autonomy: no controller here evicts pods from a NotReady node. An edge that loses its
//! link keeps running its pods; they count as they last reported until it is back.

pub mod deployment;
pub mod events;
pub mod pods;
pub mod quantity;
pub mod replicaset;
pub mod runtime;
pub mod scheduler;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;

use pods::controller_of;
use runtime::{Queue, cache, key_of, ready};

/// How often every object is reconciled even if nothing was heard of it.
const RESYNC: Duration = Duration::from_secs(30);

/// Starts the scheduler and the workload controllers against `client`.
pub fn start(client: kube::Client) {
    let (sched_q, sched_rx) = Queue::new();
    let (rs_q, rs_rx) = Queue::new();
    let (d_q, d_rx) = Queue::new();
    let (sq, rq) = (sched_q.clone(), rs_q.clone());
    let pods = cache(Api::<Pod>::all(client.clone()), move |p: &Pod| {
        if scheduler::pending(p) {
            sq.add(key_of(&p.metadata));
        }
        if let Some(o) = controller_of(&p.metadata)
            && o.kind == "ReplicaSet"
        {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            rq.add((ns, o.name.clone()));
        }
    });
    let (rq, dq) = (rs_q.clone(), d_q.clone());
    let sets = cache(
        Api::<ReplicaSet>::all(client.clone()),
        move |rs: &ReplicaSet| {
            rq.add(key_of(&rs.metadata));
            if let Some(o) = controller_of(&rs.metadata)
                && o.kind == "Deployment"
            {
                let ns = rs.metadata.namespace.clone().unwrap_or_default();
                dq.add((ns, o.name.clone()));
            }
        },
    );
    let dq = d_q.clone();
    let deployments = cache(
        Api::<Deployment>::all(client.clone()),
        move |d: &Deployment| {
            dq.add(key_of(&d.metadata));
        },
    );
    let (sq, pods2) = (sched_q.clone(), pods.clone());
    let nodes = cache(Api::<Node>::all(client.clone()), move |_: &Node| {
        for p in pods2.state().iter().filter(|p| scheduler::pending(p)) {
            sq.add(key_of(&p.metadata));
        }
    });

    let s = scheduler::Scheduler::new(client.clone(), pods.clone(), nodes.clone());
    let wait = vec![ready(&pods), ready(&nodes)];
    tokio::spawn(runtime::run(
        "scheduler",
        sched_q,
        sched_rx,
        wait,
        move |k| {
            let s = s.clone();
            async move { s.schedule(k).await }
        },
    ));

    let rs = replicaset::Controller::new(client.clone(), pods.clone(), sets.clone());
    runtime::resync(sets.clone(), rs_q.clone(), RESYNC);
    let wait = vec![ready(&pods), ready(&sets)];
    tokio::spawn(runtime::run("replicaset", rs_q, rs_rx, wait, move |k| {
        let c = rs.clone();
        async move { c.reconcile(k).await }
    }));

    let dc = deployment::Controller::new(client, deployments.clone(), sets.clone());
    runtime::resync(deployments.clone(), d_q.clone(), RESYNC);
    let wait = vec![ready(&deployments), ready(&sets)];
    tokio::spawn(runtime::run("deployment", d_q, d_rx, wait, move |k| {
        let c = dc.clone();
        async move { c.reconcile(k).await }
    }));
}
