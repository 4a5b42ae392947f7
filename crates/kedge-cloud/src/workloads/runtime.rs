//! The one way the workload controllers run: caches kept by watches (kube-rs reflectors), a
//! queue of object keys per controller (a key queued twice is reconciled once), one reconcile at
//! a time per controller, a failed key retried after a second, every key again at each resync.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// An object's namespace and name.
pub type Key = (String, String);

pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The object of `store` at `key` (a hash lookup, not a scan).
pub fn lookup<K>(store: &Store<K>, key: &Key) -> Option<std::sync::Arc<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    lookup_with(store, key, Default::default())
}

/// [`lookup`] for a kind known at run time.
pub fn lookup_with<K>(
    store: &Store<K>,
    key: &Key,
    dyntype: K::DynamicType,
) -> Option<std::sync::Arc<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut r = kube::runtime::reflector::ObjectRef::new_with(&key.1, dyntype);
    if !key.0.is_empty() {
        r = r.within(&key.0);
    }
    store.get(&r)
}

/// Where a controller's keys are queued.
#[derive(Clone)]
pub struct Queue(mpsc::UnboundedSender<Key>);

impl Queue {
    pub fn new() -> (Queue, mpsc::UnboundedReceiver<Key>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue(tx), rx)
    }

    pub fn add(&self, key: Key) {
        // The receiver goes only when the controller stops.
        let _ = self.0.send(key);
    }

    /// Queues `key` again after `delay`.
    pub fn later(&self, key: Key, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }
}

/// Watches `api` into a cache; `on` hears of every object added, changed or deleted (to queue
/// what it affects).
pub fn cache<K>(api: Api<K>, on: impl Fn(&K) + Send + 'static) -> Store<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    cache_with(api, Default::default(), on)
}

/// [`cache`] for a kind known at run time (custom resources as `DynamicObject`).
pub fn cache_with<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    on: impl Fn(&K) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let kind = K::kind(&dyntype).to_string();
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(o) => on(&o),
                Err(e) => crate::objects::log_watch_error(
                    &e,
                    &format!("controller cache of {kind}: watch failed (retrying)"),
                ),
            }
        }
    });
    reader
}

/// Waits for the caches, then reconciles queued keys one at a time until the queue closes.
/// `reconcile` returns `Some(delay)` to be called for the key again after `delay`. Keys wait
/// while `gate` is shut (another replica leads): the caches' first lists queued every object,
/// so a replica that becomes the leader reconciles all it has seen.
pub async fn run<F, Fut>(
    name: &'static str,
    (queue, mut rx): (Queue, mpsc::UnboundedReceiver<Key>),
    ready: Vec<futures::future::BoxFuture<'static, ()>>,
    mut gate: crate::leader::Gate,
    mut reconcile: F,
) where
    F: FnMut(Key) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Duration>, kube::Error>>,
{
    // A controller acting on a cache not yet filled would act on nothing (and create twice).
    let filled = futures::future::join_all(ready);
    futures::pin_mut!(filled);
    while tokio::time::timeout(Duration::from_secs(30), &mut filled)
        .await
        .is_err()
    {
        tracing::warn!(
            controller = name,
            "caches not filled after 30 s; still waiting"
        );
    }
    let mut batch = BTreeSet::new();
    loop {
        if batch.is_empty() || !gate.open() {
            tokio::select! {
                k = rx.recv() => match k {
                    Some(k) => batch.insert(k),
                    None => return,
                },
                _ = gate.changed() => false,
            };
            while let Ok(k) = rx.try_recv() {
                batch.insert(k);
            }
            continue;
        }
        for key in std::mem::take(&mut batch) {
            match reconcile(key.clone()).await {
                Ok(None) => {}
                Ok(Some(delay)) => queue.later(key, delay),
                // Gone meanwhile, or changed meanwhile: the caches will show it; try again.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    tracing::debug!(controller = name, namespace = %key.0, name = %key.1, error = %e, "reconcile raced a change");
                    queue.later(key, Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::warn!(controller = name, namespace = %key.0, name = %key.1, error = %e, "reconcile failed");
                    queue.later(key, Duration::from_secs(1));
                }
            }
        }
    }
}

/// A future that ends when `store` has its first full list.
pub fn ready<K>(store: &Store<K>) -> futures::future::BoxFuture<'static, ()>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let s = store.clone();
    Box::pin(async move {
        let _ = s.wait_until_ready().await;
    })
}

/// Queues every object of `store` every `every` (what a watch missed is caught up).
pub fn resync<K>(store: Store<K>, queue: Queue, every: Duration)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            for o in store.state() {
                queue.add(key_of(o.meta()));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::{Gate, Leadership};

    #[tokio::test]
    async fn keys_wait_while_another_replica_leads_and_are_all_reconciled_once_this_one_does() {
        let (tx, rx) = tokio::sync::watch::channel(Leadership::default());
        let (queue, keys) = Queue::new();
        let (done_tx, mut done) = mpsc::unbounded_channel();
        tokio::spawn(run(
            "test",
            (queue.clone(), keys),
            vec![],
            Gate::of(rx),
            move |k| {
                let done = done_tx.clone();
                async move {
                    let _ = done.send(k);
                    Ok(None)
                }
            },
        ));
        queue.add(("ns".into(), "a".into()));
        queue.add(("ns".into(), "b".into()));
        let waited = tokio::time::timeout(Duration::from_millis(200), done.recv()).await;
        assert!(waited.is_err(), "nothing reconciled while following");
        tx.send_replace(Leadership {
            leads: true,
            peer: None,
        });
        let mut got = vec![];
        for _ in 0..2 {
            let k = tokio::time::timeout(Duration::from_secs(5), done.recv()).await;
            got.push(k.expect("reconciled once leading").expect("key").1);
        }
        got.sort();
        assert_eq!(got, ["a", "b"]);
    }
}
