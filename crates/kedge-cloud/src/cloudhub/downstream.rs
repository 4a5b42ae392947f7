//! Cloud→edge delivery: one [`NodeQueue`] per node (the pure state machine in
//! `kedge_core::delivery`), a writer that sends what the queues release, and the record of what
//! each node acknowledged (`records`: ObjectSync and ClusterObjectSync, as KubeEdge keeps them,
//! indexed by node). On connect the queue is rebuilt from the node's records, so a resync sends
//! exactly what the node lacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kedge_core::delivery::{Acked, Limits, NodeQueue, Offered, Outgoing, RecordWrite, Version};
use kedge_core::dialect::Dialect;
use kedge_core::envelope::Message;
use kedge_core::resource::{Kind, ObjectRef};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

use super::dialect;
use super::hub::Hub;
use super::records::RecordIndex;
pub use super::records::{SyncRecord, sync_name, sync_owner};

fn sync_resource(cluster: bool) -> ApiResource {
    let (kind, plural) = if cluster {
        ("ClusterObjectSync", "clusterobjectsyncs")
    } else {
        ("ObjectSync", "objectsyncs")
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("reliablesyncs.kubeedge.io", "v1alpha1", kind),
        plural,
    )
}

/// The node and record an ObjectSync holds.
fn record_of(o: &DynamicObject) -> Option<(String, SyncRecord)> {
    let (node, uid) = sync_owner(o.metadata.name.as_deref()?)?;
    let text = |path: &str| o.data.pointer(path).and_then(|v| v.as_str());
    let r = SyncRecord {
        uid: uid.to_string(),
        rv: text("/status/objectResourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        hash: text("/status/objectHash")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0),
        namespace: o.metadata.namespace.clone(),
        kind: Kind::of(text("/spec/objectKind").unwrap_or("")),
        name: text("/spec/objectName").unwrap_or("").to_string(),
    };
    Some((node.to_string(), r))
}

/// The record of an acknowledgement.
fn record_from(a: &Acked) -> SyncRecord {
    let r = ObjectRef::parse(&a.resource).ok();
    SyncRecord {
        uid: a.uid.clone(),
        rv: a.rv,
        hash: a.hash,
        namespace: r.as_ref().and_then(|r| r.namespace()).map(String::from),
        kind: r.as_ref().map_or(Kind::Other, |r| r.kind()),
        name: r.and_then(|r| r.name).unwrap_or("").to_string(),
    }
}

/// How long a connecting node waits for the records to be listed (the cloud just started).
const LIST_WAIT: Duration = Duration::from_secs(30);

/// An acknowledgement waiting to be recorded.
struct Unrecorded {
    acked: Acked,
}

/// A node's delivery queue: it exists only while this cloud holds the node's session, built
/// from the node's records when the session starts (`Downstream::connected`). An object offered
/// to a node without one is not kept: the resync of its next connection — here or at another
/// replica — compares what the node should have with what it acknowledged and sends the rest.
/// So a replica keeps nothing for the nodes other replicas hold.
struct Queue {
    q: NodeQueue,
}

/// Record writes under way at once through the API.
const RECORD_WRITES: usize = 32;

/// Records taken at once: one commit in bulk, or `RECORD_WRITES` requests at a time.
const RECORD_BATCH: usize = 1000;

type Batch = Vec<((String, String), Unrecorded)>;

/// Writes `batch` in bulk (one commit per kind); returns what failed.
async fn write_bulk(bulk: Arc<dyn crate::bulk::Bulk>, batch: Batch) -> Batch {
    tokio::task::spawn_blocking(move || {
        let writes: Vec<RecordWrite> = batch.iter().map(|(k, u)| record_write(&k.0, &u.acked)).collect();
        match bulk.write_records(&writes) {
            Ok(results) => batch
                .into_iter()
                .zip(results)
                .filter_map(|(b, r)| {
                    let e = r.err()?;
                    tracing::debug!(node = %b.0.0, error = %e, "sync record not written; retrying");
                    Some(b)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(records = batch.len(), error = %e, "sync records not written; retrying");
                batch
            }
        }
    })
    .await
    .unwrap_or_default()
}

/// The ObjectSync (or ClusterObjectSync) write recording `a` for `node`.
fn record_write(node: &str, a: &Acked) -> RecordWrite {
    let r = ObjectRef::parse(&a.resource).ok();
    let (api_version, kind) = r
        .as_ref()
        .and_then(|r| r.kind().api_version_kind())
        .unwrap_or(("v1", r.as_ref().map_or("", |r| r.kind)));
    RecordWrite {
        namespace: r.as_ref().and_then(|r| r.namespace()).map(String::from),
        name: sync_name(node, &a.uid),
        spec: json!({"objectAPIVersion": api_version, "objectKind": kind,
            "objectName": r.and_then(|r| r.name).unwrap_or("")}),
        status: json!({"objectResourceVersion": a.rv.to_string(), "objectHash": format!("{:016x}", a.hash)}),
        delete: a.delete,
    }
}

pub struct Downstream {
    hub: Arc<Hub>,
    client: kube::Client,
    limits: Limits,
    queues: Mutex<HashMap<String, Queue>>,
    records: Mutex<RecordIndex>,
    listed: Notify,
    wake: Notify,
    acks: std::sync::atomic::AtomicU64,
    /// Acknowledgements not yet written as ObjectSyncs, by (node, uid): the newest of each.
    unrecorded: Mutex<HashMap<(String, String), Unrecorded>>,
    record: Notify,
    /// With the embedded API: records are written in bulk, many per commit.
    bulk: Option<Arc<dyn crate::bulk::Bulk>>,
    /// What each bus rule (node, uid) enabled at a stock edgecore (a topic subscribed, a URL
    /// started): its deletion carries no spec, and edgecore disables by topic or URL.
    enabled: Mutex<HashMap<(String, String), dialect::Enabled>>,
}

impl Downstream {
    pub fn new(
        hub: Arc<Hub>,
        client: kube::Client,
        bulk: Option<Arc<dyn crate::bulk::Bulk>>,
    ) -> Arc<Downstream> {
        let d = Arc::new(Downstream {
            hub,
            client,
            limits: Limits::default(),
            queues: Mutex::default(),
            records: Mutex::default(),
            listed: Notify::new(),
            wake: Notify::new(),
            acks: Default::default(),
            unrecorded: Mutex::default(),
            record: Notify::new(),
            bulk,
            enabled: Mutex::default(),
        });
        tokio::spawn(d.clone().write_loop());
        tokio::spawn(d.clone().record_loop());
        for cluster in [false, true] {
            tokio::spawn(d.clone().watch_records(cluster));
        }
        d
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, RecordIndex> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the index of records from a watch of ObjectSyncs (or ClusterObjectSyncs).
    async fn watch_records(self: Arc<Self>, cluster: bool) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &sync_resource(cluster));
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => self.records().list_started(cluster),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some((node, r)) = record_of(&o) {
                        self.records().listed(&node, r);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    self.records().list_done(cluster);
                    self.listed.notify_waiters();
                }
                Ok(watcher::Event::Apply(o)) => {
                    if let Some((node, r)) = record_of(&o) {
                        self.records().put(&node, r);
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some((node, r)) = record_of(&o) {
                        self.records().remove(&node, &r.uid);
                    }
                }
                Err(e) => crate::objects::log_watch_error(&e, "watching sync records"),
            }
        }
    }

    /// Waits (bounded) until every record has been listed once.
    async fn records_listed(&self) -> bool {
        let wait = async {
            loop {
                let listed = self.listed.notified();
                if self.records().is_whole() {
                    return;
                }
                listed.await;
            }
        };
        tokio::time::timeout(LIST_WAIT, wait).await.is_ok()
    }

    /// Queues an object version for `node`; `None` when its session is not here (the resync of
    /// its next connection brings the object).
    pub fn offer(&self, node: &str, out: Outgoing) -> Option<Offered> {
        let offered = self.queues().get_mut(node)?.q.offer(out);
        if offered == Offered::Full {
            tracing::warn!(
                node,
                "delivery queue full; the object will be resynced on the next connection"
            );
        }
        self.wake.notify_one();
        Some(offered)
    }

    /// A node connected: build its queue from what it acknowledged (keeping what an earlier
    /// session of it left), and let it send. Returns its records, for the resync; `None` when
    /// they could not be listed in time (then nothing is resynced: a partial record would
    /// resend what the node has and miss deletions).
    pub async fn connected(&self, node: &str) -> Option<Vec<SyncRecord>> {
        let listed = self.records_listed().await;
        if !listed {
            tracing::warn!(
                node,
                "resync skipped: the sync records (ObjectSyncs) could not be listed"
            );
        }
        let records = self.records().of(node);
        let acked = records
            .iter()
            .map(|r| (r.uid.clone(), r.version()))
            .collect();
        let mut queues = self.queues();
        let waiting = queues
            .get_mut(node)
            .map(|n| n.q.drain())
            .unwrap_or_default();
        let mut q = NodeQueue::new(self.limits, acked);
        for o in waiting {
            q.offer(o);
        }
        queues.insert(node.to_string(), Queue { q });
        drop(queues);
        self.wake.notify_one();
        listed.then_some(records)
    }

    /// The node's session ended: its queue goes (what was in flight and unacknowledged is
    /// sent again by the next connection's resync, wherever it lands).
    pub fn disconnected(&self, node: &str) {
        self.queues().remove(node);
    }

    /// The node acknowledged `parent_msg_id`: it counts at once (the queue and the index), and
    /// is written as an ObjectSync soon after, off the node's path, so a burst of acks never
    /// waits for the API (nor makes the edge re-send). Lost in a crash before it is written, an
    /// acknowledgement only makes the next resync send the object again.
    pub fn ack(&self, node: &str, parent_msg_id: &str) {
        let acked = self
            .queues()
            .get_mut(node)
            .and_then(|n| n.q.ack(parent_msg_id));
        self.wake.notify_one();
        let Some(a) = acked else { return };
        self.acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut records = self.records();
            match a.delete {
                true => records.remove(node, &a.uid),
                false => records.put(node, record_from(&a)),
            }
        }
        let key = (node.to_string(), a.uid.clone());
        let mut pending = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        // The newest acknowledgement of an object is the one to write.
        pending.insert(key, Unrecorded { acked: a });
        drop(pending);
        self.record.notify_one();
    }

    /// Writes `batch` through the API, `RECORD_WRITES` at once; returns what failed.
    async fn write_each(&self, batch: Batch) -> Batch {
        futures::stream::iter(batch)
            .map(|(key, u)| async move {
                match self.record(&key.0, &u.acked).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::debug!(node = %key.0, error = %crate::objects::brief(&e), "sync record not written; retrying");
                        Some((key, u))
                    }
                }
            })
            .buffer_unordered(RECORD_WRITES)
            .filter_map(|f| async move { f })
            .collect()
            .await
    }

    /// Puts failed writes back, unless a newer acknowledgement of the object came meanwhile.
    fn retry_later(&self, failed: Batch) {
        let mut pending = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        for (key, u) in failed {
            pending.entry(key).or_insert(u);
        }
    }

    /// Writes the acknowledgements as they come, a bounded number at once; a failed write is
    /// tried again a moment later (unless a newer one took its place).
    async fn record_loop(self: Arc<Self>) {
        loop {
            self.record.notified().await;
            loop {
                let batch: Batch = {
                    let mut pending = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
                    let keys: Vec<(String, String)> =
                        pending.keys().take(RECORD_BATCH).cloned().collect();
                    keys.into_iter()
                        .filter_map(|k| pending.remove(&k).map(|u| (k, u)))
                        .collect()
                };
                if batch.is_empty() {
                    break;
                }
                let failed = match &self.bulk {
                    Some(bulk) => write_bulk(bulk.clone(), batch).await,
                    None => self.write_each(batch).await,
                };
                if !failed.is_empty() {
                    self.retry_later(failed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// `/metrics` readings: queue depths across nodes, acks and re-sends since start.
    pub fn readings(&self) -> Vec<kedge_http::metrics::Reading> {
        use kedge_http::metrics::Reading;
        let records = self.records().len() as u64;
        let unrecorded = self
            .unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64;
        let queues = self.queues();
        let sum = |f: fn(&NodeQueue) -> u64| queues.values().map(|n| f(&n.q)).sum::<u64>();
        vec![
            Reading::gauge(
                "kedge_downstream_pending",
                "Object versions waiting to be sent to edges.",
                sum(|q| q.pending() as u64),
            ),
            Reading::gauge(
                "kedge_downstream_inflight",
                "Messages sent to edges and not yet acked.",
                sum(|q| q.inflight() as u64),
            ),
            Reading::counter(
                "kedge_downstream_resends",
                "Messages re-sent to edges for want of an ack.",
                sum(NodeQueue::resends),
            ),
            Reading::counter(
                "kedge_downstream_acks",
                "Acknowledgements received from edges.",
                self.acks.load(std::sync::atomic::Ordering::Relaxed),
            ),
            Reading::gauge(
                "kedge_downstream_records",
                "Objects edges have acknowledged (ObjectSyncs).",
                records,
            ),
            Reading::gauge(
                "kedge_downstream_unrecorded",
                "Acknowledgements not yet written as ObjectSyncs.",
                unrecorded,
            ),
        ]
    }

    /// Sends what the queues release, to each node only as much as its session has room for:
    /// a slow node never holds up the others.
    async fn write_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            // Only queues with something to send or to re-send: with thousands of idle
            // nodes, this pass must not allocate per node.
            let busy: Vec<String> = self
                .queues()
                .iter()
                .filter(|(_, n)| n.q.pending() > 0 || n.q.inflight() > 0)
                .map(|(n, _)| n.clone())
                .collect();
            let now = kedge_core::clock::monotonic_ms();
            for node in busy {
                let room = self.hub.room(&node);
                if room == 0 {
                    continue;
                }
                let msgs = self
                    .queues()
                    .get_mut(&node)
                    .map(|n| n.q.poll(now, room))
                    .unwrap_or_default();
                let stock = self.hub.dialect(&node) == Some(Dialect::KubeEdge);
                'node: for m in msgs {
                    if stock && self.waits_for_model(&node, &m) {
                        // Held: the queue re-sends it when due, once the model is taken.
                        continue;
                    }
                    let (out, unconfirmed) = match stock {
                        true => self.for_kubeedge(&node, m),
                        false => (vec![m], None),
                    };
                    for m in out {
                        // Full after all (replies share the queue): re-sent when due.
                        if self.hub.try_send(&node, m).is_err() {
                            break 'node;
                        }
                    }
                    if let Some(id) = unconfirmed {
                        self.ack(&node, &id);
                    }
                }
            }
        }
    }

    /// Whether `m` is a Device whose model `node` has not acknowledged yet (`dialect`).
    fn waits_for_model(&self, node: &str, m: &Message) -> bool {
        dialect::model_needed(m).is_some_and(|model| {
            self.queues()
                .get(node)
                .is_some_and(|n| n.q.is_inflight(&model))
        })
    }

    /// `m` as a stock edgecore takes it (`dialect`; kedge's edge takes it as it is), and the id
    /// of a delivery that counts once sent (edgecore does not acknowledge it).
    fn for_kubeedge(&self, node: &str, m: Message) -> (Vec<Message>, Option<String>) {
        let id = m.header.id.clone();
        let uid = m
            .content
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let known = self.records().get(node, &uid).is_some();
        let key = (node.to_string(), uid);
        let mut enabled = self.enabled.lock().unwrap_or_else(|p| p.into_inner());
        let remembered = match m.route.operation == kedge_core::envelope::op::DELETE {
            true => enabled.remove(&key),
            false => None,
        };
        let t = dialect::for_kubeedge(m, known, remembered);
        if let Some(what) = t.enabled {
            enabled.insert(key, what);
        }
        (t.send, (!t.acknowledged).then_some(id))
    }

    fn syncs(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &sync_resource(false)),
            None => Api::all_with(self.client.clone(), &sync_resource(true)),
        }
    }

    /// A node was deleted: drop what this cloud holds for it in memory (its queue, its
    /// acknowledgements not yet written); its records are the leader's to remove.
    pub fn drop_node(&self, node: &str) {
        self.queues().remove(node);
        self.unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _), _| n != node);
    }

    /// A node was deleted: drop its queue and what it acknowledged, so a node registering
    /// again under that name starts from nothing. Returns how many records were removed.
    pub async fn forget_node(&self, node: &str) -> Result<usize, kube::Error> {
        self.drop_node(node);
        let records = self.records().of(node);
        let mut n = 0;
        for r in records {
            let name = sync_name(node, &r.uid);
            match self
                .syncs(r.namespace.as_deref())
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => n += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            self.records().remove(node, &r.uid);
        }
        Ok(n)
    }

    /// Removes the records of nodes that no longer exist (deleted while the cloud was down).
    pub async fn forget_orphans(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> Result<usize, kube::Error> {
        if !self.records_listed().await {
            return Ok(0);
        }
        let orphans: Vec<String> = self
            .records()
            .nodes()
            .into_iter()
            .filter(|n| !live.contains(n))
            .collect();
        let mut n = 0;
        for node in orphans {
            n += self.forget_node(&node).await?;
        }
        Ok(n)
    }

    /// Writes what `node` acknowledged. Through the API, each write is conditional: another
    /// replica may hold the node now and have recorded a newer version, which a late write from
    /// here must not undo — the version is read, compared, and replaced only if it did not
    /// change meanwhile (a 409 reads again).
    async fn record(&self, node: &str, a: &Acked) -> Result<(), kube::Error> {
        if ObjectRef::parse(&a.resource).is_err() {
            return Ok(());
        }
        let w = record_write(node, a);
        let api = self.syncs(w.namespace.as_deref());
        if w.delete {
            return match api.delete(&w.name, &DeleteParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other.map(|_| ()),
            };
        }
        let ours = Version {
            rv: a.rv,
            hash: a.hash,
        };
        for _ in 0..RECORD_TRIES {
            let Some(current) = api.get_opt(&w.name).await? else {
                create_record(&api, &w).await?;
                continue;
            };
            let stored = record_of(&current).map(|(_, r)| r.version());
            if !supersedes(ours, stored) {
                return Ok(());
            }
            let p = json!({"metadata": {"resourceVersion": current.metadata.resource_version},
                "status": w.status});
            match api
                .patch_status(&w.name, &PatchParams::default(), &Patch::Merge(&p))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => continue,
                other => return other.map(drop),
            }
        }
        Ok(())
    }
}

/// Tries at a conditional record write before leaving it to a newer acknowledgement.
const RECORD_TRIES: usize = 5;

/// Whether `ours` should replace the `stored` record: never by an older version.
fn supersedes(ours: Version, stored: Option<Version>) -> bool {
    stored.is_none_or(|s| ours.rv > s.rv || (ours.rv == s.rv && ours.hash != s.hash))
}

/// Creates the ObjectSync (or ClusterObjectSync) of `w` unless it exists.
async fn create_record(api: &Api<DynamicObject>, w: &RecordWrite) -> Result<(), kube::Error> {
    let ar = sync_resource(w.namespace.is_none());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": ar.kind,
        "metadata": {"name": w.name, "namespace": w.namespace},
        "spec": w.spec,
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop),
    }
}
