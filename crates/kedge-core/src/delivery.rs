//! Cloud→edge delivery for one node, as a pure state machine (no sockets, no clock: callers pass
//! the time). Level-based and at-least-once:
//! - pending updates to one object coalesce to the newest version;
//! - a sent message stays in flight until the edge acks its `msg_id` (`response`,
//!   `parent_msg_id`), and is re-sent with the same `msg_id` until then;
//! - what the node has acked is remembered per object (the cloud persists it as ObjectSync), so
//!   on reconnect [`resync`] says exactly what the node lacks, deletions included;
//! - versions the node already has are never queued again — nor newer versions whose content
//!   the node already has (the same [`Version::hash`]: a pod whose status the edge itself
//!   reported, a device whose reported twins changed), so a resync after a restart of the cloud
//!   sends nothing an edge already holds.
//!
//! CloudHub owns one [`NodeQueue`] per node: it `offer`s what controllers send, writes what
//! `poll` returns, feeds acks to `ack`, and calls `disconnected` when the session ends.

use std::collections::{HashMap, VecDeque};

use crate::envelope::Message;

/// One object version to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The object's UID: versions of one object coalesce under it.
    pub uid: String,
    /// Its resourceVersion (numeric, as Kubernetes' are in practice).
    pub rv: u64,
    /// A hash of what the edge uses of it (0: not known, only `rv` counts).
    pub hash: u64,
    pub delete: bool,
    pub msg: Message,
}

/// What a node holds of an object: its resourceVersion and the hash of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    pub rv: u64,
    /// 0: not known.
    pub hash: u64,
}

impl Version {
    /// Whether a node holding `self` already has what `rv`/`hash` would give it.
    pub fn covers(&self, rv: u64, hash: u64) -> bool {
        self.rv >= rv || (hash != 0 && self.hash == hash)
    }
}

/// FNV-1a's offset basis: the hash of nothing.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

fn feed(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// A stable 64-bit hash (FNV-1a) of bytes, the same in any process.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FNV_BASIS;
    feed(&mut h, bytes);
    h
}

/// A stable 64-bit hash (FNV-1a) of a JSON value with its object keys sorted, so the same
/// content hashes the same whatever order its keys came in, in any process.
pub fn hash_json(v: &serde_json::Value) -> u64 {
    fn walk(h: &mut u64, v: &serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                feed(h, b"{");
                for k in keys {
                    feed(h, k.as_bytes());
                    feed(h, b":");
                    walk(h, &m[k]);
                    feed(h, b",");
                }
                feed(h, b"}");
            }
            Value::Array(a) => {
                feed(h, b"[");
                for x in a {
                    walk(h, x);
                    feed(h, b",");
                }
                feed(h, b"]");
            }
            other => feed(h, other.to_string().as_bytes()),
        }
    }
    let mut h = FNV_BASIS;
    walk(&mut h, v);
    // 0 means "not known".
    h.max(1)
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages in flight (sent, not acked) at once.
    pub max_inflight: usize,
    /// Objects waiting to be sent; beyond this, offers are refused (resync catches them up).
    pub max_pending: usize,
    /// Re-send an unacked message after this long.
    pub resend_after_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight: 256,
            max_pending: 100_000,
            resend_after_ms: 5_000,
        }
    }
}

/// What happened to an offered version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// Replaced an older pending version of the same object.
    Coalesced,
    /// The node already acked this version or a newer one.
    AlreadyAcked,
    /// A newer version (or the deletion) is already pending or in flight.
    Superseded,
    /// The queue is full; the object will be caught up by the next resync.
    Full,
}

/// An acknowledged version: record it (ObjectSync) and forget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub uid: String,
    pub rv: u64,
    pub hash: u64,
    pub delete: bool,
    /// The message's resource (`<ns>/<type>/<name>`).
    pub resource: String,
}

#[derive(Debug)]
struct Inflight {
    out: Outgoing,
    sent_at_ms: u64,
    attempts: u32,
}

#[derive(Debug)]
pub struct NodeQueue {
    limits: Limits,
    pending: HashMap<String, Outgoing>,
    order: VecDeque<String>,
    inflight: HashMap<String, Inflight>,
    acked: HashMap<String, Version>,
    resends: u64,
}

impl NodeQueue {
    /// A queue for a node that has acked `acked` (uid → version).
    pub fn new(limits: Limits, acked: HashMap<String, Version>) -> NodeQueue {
        NodeQueue {
            limits,
            pending: HashMap::new(),
            order: VecDeque::new(),
            inflight: HashMap::new(),
            acked,
            resends: 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Messages re-sent because no ack came in time.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Whether a message for `resource` was sent and not yet acknowledged.
    pub fn is_inflight(&self, resource: &str) -> bool {
        self.inflight
            .values()
            .any(|i| i.out.msg.route.resource == resource)
    }

    /// The version of `uid` the node has acked.
    pub fn acked(&self, uid: &str) -> Option<u64> {
        self.acked.get(uid).map(|v| v.rv)
    }

    fn newest_inflight(&self, uid: &str) -> Option<&Outgoing> {
        self.inflight
            .values()
            .filter(|i| i.out.uid == uid)
            .map(|i| &i.out)
            .max_by_key(|o| (o.rv, o.delete))
    }

    pub fn offer(&mut self, out: Outgoing) -> Offered {
        // What is queued or in flight already gives the node this (or a deletion wins).
        let covered = |o: &Outgoing| {
            o.delete
                || (!out.delete
                    && Version {
                        rv: o.rv,
                        hash: o.hash,
                    }
                    .covers(out.rv, out.hash))
        };
        if !out.delete
            && self
                .acked
                .get(&out.uid)
                .is_some_and(|a| a.covers(out.rv, out.hash))
        {
            return Offered::AlreadyAcked;
        }
        if let Some(p) = self.pending.get(&out.uid) {
            if covered(p) {
                return Offered::Superseded;
            }
            self.pending.insert(out.uid.clone(), out);
            return Offered::Coalesced;
        }
        if self.newest_inflight(&out.uid).is_some_and(covered) {
            return Offered::Superseded;
        }
        if self.pending.len() >= self.limits.max_pending {
            return Offered::Full;
        }
        self.order.push_back(out.uid.clone());
        self.pending.insert(out.uid.clone(), out);
        Offered::Queued
    }

    /// What to write now, at most `room` messages: due re-sends (same `msg_id`), then new
    /// messages up to the in-flight limit, oldest first. `now_ms` is on a monotonic clock.
    pub fn poll(&mut self, now_ms: u64, room: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for i in self.inflight.values_mut() {
            if out.len() >= room {
                return out;
            }
            if now_ms.saturating_sub(i.sent_at_ms) >= self.limits.resend_after_ms {
                i.sent_at_ms = now_ms;
                i.attempts += 1;
                self.resends += 1;
                out.push(i.out.msg.clone());
            }
        }
        while self.inflight.len() < self.limits.max_inflight && out.len() < room {
            let Some(uid) = self.order.pop_front() else {
                break;
            };
            let Some(o) = self.pending.remove(&uid) else {
                continue;
            };
            out.push(o.msg.clone());
            let id = o.msg.header.id.clone();
            self.inflight.insert(
                id,
                Inflight {
                    out: o,
                    sent_at_ms: now_ms,
                    attempts: 1,
                },
            );
        }
        out
    }

    /// The edge acked `parent_msg_id`; `None` for an unknown or repeated ack.
    pub fn ack(&mut self, parent_msg_id: &str) -> Option<Acked> {
        let o = self.inflight.remove(parent_msg_id)?.out;
        if o.delete {
            self.acked.remove(&o.uid);
        } else {
            let a = self.acked.entry(o.uid.clone()).or_default();
            if o.rv >= a.rv {
                *a = Version {
                    rv: o.rv,
                    hash: o.hash,
                };
            }
        }
        Some(Acked {
            resource: o.msg.route.resource,
            uid: o.uid,
            rv: o.rv,
            hash: o.hash,
            delete: o.delete,
        })
    }

    /// Drops the acknowledgement record of `uid` (for one-off messages, whose keys never recur).
    pub fn forget(&mut self, uid: &str) {
        self.acked.remove(uid);
    }

    /// Everything not yet acknowledged (in flight first), emptying the queue: to carry it into a
    /// queue rebuilt with fresher acknowledgement records.
    pub fn drain(&mut self) -> Vec<Outgoing> {
        self.disconnected();
        let mut out = Vec::new();
        while let Some(uid) = self.order.pop_front() {
            if let Some(o) = self.pending.remove(&uid) {
                out.push(o);
            }
        }
        out
    }

    /// The session ended: what was in flight goes back to the front of the queue (unless a newer
    /// version is pending), to be sent first on the next connection.
    pub fn disconnected(&mut self) {
        let mut back: Vec<Inflight> = self.inflight.drain().map(|(_, i)| i).collect();
        back.sort_by_key(|i| std::cmp::Reverse(i.sent_at_ms));
        for i in back {
            if !self.pending.contains_key(&i.out.uid) {
                self.order.push_front(i.out.uid.clone());
                self.pending.insert(i.out.uid.clone(), i.out);
            }
        }
    }
}

/// One write of what a node acknowledged: its ObjectSync (in `namespace`) or ClusterObjectSync
/// (`namespace` is `None`), created with `spec` and `status` when missing, its `status` replaced
/// otherwise; or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    pub namespace: Option<String>,
    pub name: String,
    pub spec: serde_json::Value,
    pub status: serde_json::Value,
    pub delete: bool,
}

/// What a (re)connecting node lacks: objects it should have at a newer version than it acked
/// (`send`), and objects it acked that it should no longer have (`delete`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resync {
    pub send: Vec<String>,
    pub delete: Vec<String>,
}

/// Compares what the node should have (`desired`: uid → current version) with what it
/// acked: an object is sent unless the node has its version, or its content.
pub fn resync(desired: &HashMap<String, Version>, acked: &HashMap<String, Version>) -> Resync {
    let mut r = Resync::default();
    for (uid, v) in desired {
        if acked.get(uid).is_none_or(|a| !a.covers(v.rv, v.hash)) {
            r.send.push(uid.clone());
        }
    }
    for uid in acked.keys() {
        if !desired.contains_key(uid) {
            r.delete.push(uid.clone());
        }
    }
    r.send.sort();
    r.delete.sort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(uid: &str, rv: u64, delete: bool) -> Outgoing {
        let op = if delete { "delete" } else { "update" };
        let msg = Message::new(
            "edgecontroller",
            "resource",
            op,
            &format!("default/configmap/{uid}"),
            json!({}),
        )
        .with_resource_version(rv.to_string());
        Outgoing {
            uid: uid.into(),
            rv,
            hash: 0,
            delete,
            msg,
        }
    }

    fn q() -> NodeQueue {
        NodeQueue::new(
            Limits {
                max_inflight: 2,
                max_pending: 3,
                resend_after_ms: 100,
            },
            HashMap::new(),
        )
    }

    fn rvs(msgs: &[Message]) -> Vec<String> {
        msgs.iter()
            .map(|m| m.header.resource_version.clone())
            .collect()
    }

    #[test]
    fn pending_versions_coalesce_to_the_newest() {
        let mut q = q();
        assert_eq!(q.offer(out("a", 1, false)), Offered::Queued);
        assert_eq!(q.offer(out("a", 3, false)), Offered::Coalesced);
        assert_eq!(q.offer(out("a", 2, false)), Offered::Superseded);
        assert_eq!(rvs(&q.poll(0, usize::MAX)), ["3"]);
    }

    #[test]
    fn unacked_messages_are_resent_with_the_same_id_until_acked() {
        let mut q = q();
        q.offer(out("a", 1, false));
        let first = q.poll(0, usize::MAX);
        assert!(q.is_inflight("default/configmap/a"));
        assert!(q.poll(50, usize::MAX).is_empty(), "not due yet");
        let again = q.poll(100, usize::MAX);
        assert_eq!(again[0].header.id, first[0].header.id);
        assert_eq!(q.resends(), 1);
        assert_eq!(
            q.ack(&first[0].header.id),
            Some(Acked {
                uid: "a".into(),
                rv: 1,
                hash: 0,
                delete: false,
                resource: "default/configmap/a".into(),
            })
        );
        assert!(q.poll(1000, usize::MAX).is_empty());
        assert!(!q.is_inflight("default/configmap/a"));
        assert_eq!(
            q.ack(&first[0].header.id),
            None,
            "a repeated ack is ignored"
        );
        assert_eq!(q.offer(out("a", 1, false)), Offered::AlreadyAcked);
        q.forget("a");
        assert_eq!(q.acked("a"), None);
    }

    #[test]
    fn in_flight_is_bounded_and_order_is_kept() {
        let mut q = q();
        for (uid, rv) in [("a", 1), ("b", 2), ("c", 3)] {
            q.offer(out(uid, rv, false));
        }
        assert_eq!(q.offer(out("d", 4, false)), Offered::Full);
        let sent = q.poll(0, usize::MAX);
        assert_eq!(rvs(&sent), ["1", "2"]);
        q.ack(&sent[0].header.id);
        assert_eq!(rvs(&q.poll(1, usize::MAX)), ["3"]);
    }

    #[test]
    fn poll_takes_no_more_than_there_is_room_for() {
        let mut q = q();
        q.offer(out("a", 1, false));
        q.offer(out("b", 1, false));
        assert_eq!(q.poll(0, 1).len(), 1);
        assert_eq!(q.poll(0, 0).len(), 0, "no room, nothing taken");
        assert_eq!((q.inflight(), q.pending()), (1, 1));
        assert_eq!(q.poll(100, 1).len(), 1, "the due re-send first");
        assert_eq!((q.inflight(), q.pending()), (1, 1));
        assert_eq!(q.poll(101, 5).len(), 1);
    }

    #[test]
    fn deletions_win_and_clear_what_was_acked() {
        let mut q = q();
        q.offer(out("a", 1, false));
        let m = q.poll(0, usize::MAX);
        q.ack(&m[0].header.id);
        assert_eq!(q.acked("a"), Some(1));
        assert_eq!(q.offer(out("a", 2, true)), Offered::Queued);
        assert_eq!(
            q.offer(out("a", 3, false)),
            Offered::Superseded,
            "nothing after a delete"
        );
        let d = q.poll(1, usize::MAX);
        q.ack(&d[0].header.id);
        assert_eq!(q.acked("a"), None);
    }

    #[test]
    fn a_disconnect_requeues_what_was_in_flight_first() {
        let mut q = q();
        q.offer(out("a", 1, false));
        q.offer(out("b", 1, false));
        let sent = q.poll(0, usize::MAX);
        q.offer(out("c", 1, false));
        q.offer(out("b", 2, false));
        q.disconnected();
        assert_eq!(q.inflight(), 0);
        assert_eq!(sent.len(), 2);
        // a was in flight: first again. b's in-flight v1 gave way to its pending v2, queued
        // after c.
        let again: Vec<(String, String)> = q
            .poll(10, usize::MAX)
            .iter()
            .map(|m| (m.route.resource.clone(), m.header.resource_version.clone()))
            .collect();
        let want = [("default/configmap/a", "1"), ("default/configmap/c", "1")];
        assert_eq!(again, want.map(|(r, v)| (r.to_string(), v.to_string())));
        assert_eq!(q.pending(), 1, "b v2 waits for a free in-flight slot");
        let rest: Vec<u64> = q.drain().iter().map(|o| o.rv).collect();
        assert_eq!(
            rest.len(),
            3,
            "a and c in flight again, b v2 pending: {rest:?}"
        );
        assert_eq!((q.pending(), q.inflight()), (0, 0));
    }

    fn versions(v: &[(&str, u64, u64)]) -> HashMap<String, Version> {
        v.iter()
            .map(|(k, rv, hash)| {
                (
                    k.to_string(),
                    Version {
                        rv: *rv,
                        hash: *hash,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn resync_finds_what_the_node_lacks() {
        let desired = versions(&[("a", 5, 0), ("b", 2, 0), ("c", 1, 0), ("same", 9, 7)]);
        let acked = versions(&[("a", 5, 0), ("b", 1, 0), ("gone", 9, 0), ("same", 4, 7)]);
        assert_eq!(
            resync(&desired, &acked),
            Resync {
                send: vec!["b".into(), "c".into()],
                delete: vec!["gone".into()]
            },
            "a newer version with the content the node has is not sent"
        );
    }

    #[test]
    fn a_newer_version_with_the_same_content_is_not_sent_again() {
        let mut q = q();
        let with = |rv, hash| Outgoing {
            hash,
            ..out("a", rv, false)
        };
        q.offer(with(1, 42));
        let m = q.poll(0, usize::MAX);
        assert_eq!(
            q.offer(with(2, 42)),
            Offered::Superseded,
            "in flight, same content"
        );
        q.ack(&m[0].header.id);
        assert_eq!(
            q.offer(with(3, 42)),
            Offered::AlreadyAcked,
            "the edge has this content"
        );
        assert_eq!(q.offer(with(3, 43)), Offered::Queued, "new content goes");
        assert_eq!(
            q.offer(with(4, 0)),
            Offered::Coalesced,
            "unknown content: by version"
        );
    }

    #[test]
    fn hashes_ignore_key_order() {
        let a = serde_json::json!({"x": 1, "y": {"b": [1, 2], "a": "s"}});
        let b = serde_json::json!({"y": {"a": "s", "b": [1, 2]}, "x": 1});
        assert_eq!(hash_json(&a), hash_json(&b));
        assert_ne!(
            hash_json(&a),
            hash_json(&serde_json::json!({"x": 2, "y": {"a": "s", "b": [1, 2]}}))
        );
        assert_ne!(
            hash_json(&serde_json::json!([1, 2])),
            hash_json(&serde_json::json!([2, 1]))
        );
        assert_ne!(hash_json(&serde_json::Value::Null), 0);
    }
}
