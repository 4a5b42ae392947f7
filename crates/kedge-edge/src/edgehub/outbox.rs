//! The edge's outbox: every edge→cloud message that must not be lost (status, twin reports,
//! eventbus→rest messages) is written here first and removed only when the cloud acknowledges it
//! — KubeEdge sends these straight to the socket and loses them around disconnects. Messages with
//! a key (status-like) coalesce to the latest; others are kept one by one. Bounded by bytes, with
//! a clear error when full. Sending, resending and acks use `kedge_core::delivery::NodeQueue`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use kedge_core::delivery::{Limits, NodeQueue, Outgoing};
use kedge_core::envelope::Message;
use rusqlite::params;
use tokio::sync::Notify;

/// Runs `f` in one SQLite transaction (rolled back if it fails).
fn in_transaction(
    db: &rusqlite::Connection,
    mut f: impl FnMut() -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut attempt = || {
        db.prepare_cached("BEGIN")?.execute([])?;
        let done = f().and_then(|()| db.prepare_cached("COMMIT")?.execute([]).map(drop));
        if done.is_err() {
            let _ = db.execute_batch("ROLLBACK");
        }
        done
    };
    match attempt() {
        // A full disk: the write-ahead log may hold what deleted rows freed; give it back, and
        // try once more (deleting acknowledged messages must not wait for free space).
        Err(e) if crate::db::is_full(&e) && crate::db::reclaim(db) => attempt(),
        done => done,
    }
}

/// Default bound on what the outbox holds.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Free space (on the file system, or free pages inside the database) the outbox leaves alone:
/// SQLite needs room to checkpoint its write-ahead log and to delete what the cloud
/// acknowledged. Filled to the last byte, a database can no longer even delete (measured: a
/// 3 MiB disk wedged for good).
pub const DISK_RESERVE: u64 = 8 << 20;

/// Bytes the database can still grow into: free on its file system plus its free pages.
fn disk_room(db: &rusqlite::Connection) -> Option<u64> {
    let dir = Path::new(db.path()?).parent()?;
    let fs = rustix::fs::statvfs(dir).ok()?;
    let page = |p: &str| db.query_row(p, [], |r| r.get::<_, i64>(0)).ok();
    let free_pages = page("PRAGMA freelist_count")? * page("PRAGMA page_size")?;
    Some(fs.f_bavail * fs.f_frsize + free_pages.unsigned_abs())
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox is full ({max} bytes of messages waiting for the cloud); message dropped")]
    Full { max: u64 },
    #[error(
        "the edge's disk is nearly full (the outbox keeps {} MiB free); message not stored",
        DISK_RESERVE >> 20
    )]
    DiskFull,
    #[error("outbox store: {0}")]
    Db(#[from] rusqlite::Error),
}

/// An outbox message as the delivery queue holds it: its key, and its sequence as the version.
fn entry(key: String, seq: u64, msg: Message) -> Outgoing {
    Outgoing {
        uid: key,
        rv: seq,
        hash: 0,
        delete: false,
        msg,
    }
}

struct State {
    queue: NodeQueue,
    seq: u64,
    bytes: u64,
    /// Each stored message's sequence and size by key, so neither a push nor an ack asks the
    /// database for them.
    stored: HashMap<String, (u64, u64)>,
    /// Keys of messages kept in memory only (`push_volatile`).
    volatile: std::collections::HashSet<String>,
    room: Room,
}

/// Room on the disk, as last measured, and what was written since.
#[derive(Default)]
struct Room {
    measured: Option<(u64, u64)>,
    written: u64,
}

/// How long a measure of the disk's room is trusted, and while more than how much is left.
const ROOM_FOR_MS: u64 = 1_000;
const ROOM_MARGIN: u64 = 64 << 20;

impl Room {
    /// Bytes the outbox may still write (above [`DISK_RESERVE`]): measured again once a
    /// second, or at every write once less than [`ROOM_MARGIN`] is left (a `statvfs` and two
    /// queries were a tenth of a report's cost).
    fn left(&mut self, db: &rusqlite::Connection, now_ms: u64) -> u64 {
        let estimate = match self.measured {
            Some((at, room)) if now_ms.saturating_sub(at) < ROOM_FOR_MS => {
                Some(room.saturating_sub(self.written))
            }
            _ => None,
        };
        match estimate {
            Some(left) if left > ROOM_MARGIN => left,
            _ => {
                let room = disk_room(db).map_or(u64::MAX, |r| r.saturating_sub(DISK_RESERVE));
                self.measured = Some((now_ms, room));
                self.written = 0;
                room
            }
        }
    }
}

pub struct Outbox {
    db: crate::db::Db,
    state: Mutex<State>,
    max_bytes: u64,
    refused: std::sync::atomic::AtomicU64,
    /// Signalled when there is something new to send.
    pub wake: Notify,
}

fn limits() -> Limits {
    Limits {
        max_inflight: 64,
        max_pending: usize::MAX,
        resend_after_ms: 5_000,
    }
}

impl Outbox {
    /// Opens the outbox in the edge's database, loading what is still waiting.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        Self::open_in(crate::db::open(path)?, max_bytes)
    }

    /// The outbox in the edge's shared database.
    pub fn open_in(shared: crate::db::Db, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let db = crate::db::lock(&shared);
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, msg TEXT NOT NULL);",
        )?;
        let mut state = State {
            queue: NodeQueue::new(limits(), Default::default()),
            seq: 0,
            bytes: 0,
            stored: HashMap::new(),
            volatile: Default::default(),
            room: Room::default(),
        };
        {
            let mut stmt = db.prepare("SELECT key, seq, msg FROM outbox ORDER BY seq")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (key, seq, text) = row?;
                state.seq = state.seq.max(seq);
                state.bytes += text.len() as u64;
                state.stored.insert(key.clone(), (seq, text.len() as u64));
                match Message::decode(text.as_bytes(), usize::MAX) {
                    Ok(msg) => {
                        state.queue.offer(entry(key, seq, msg));
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "dropping an unreadable outbox entry")
                    }
                }
            }
        }
        drop(db);
        Ok(Outbox {
            db: shared,
            state: Mutex::new(state),
            max_bytes,
            refused: Default::default(),
            wake: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `msg` until the cloud acks it; a later message with the same `key` replaces it.
    pub fn push(&self, msg: Message, key: Option<&str>) -> Result<(), OutboxError> {
        let key = key.map_or_else(|| msg.header.id.clone(), String::from);
        let mut refused = self.push_keyed_with(vec![(msg, key)], |_| Ok(()))?;
        refused.pop().map_or(Ok(()), Err)
    }

    /// Stores keyed messages (each replacing the last of its key) together with the caller's
    /// own writes (`also`, on the same connection), in one transaction: a burst of twin reports
    /// costs one commit, and what a report changed is on disk exactly when its message is. A
    /// message that does not fit (the outbox's bound, the disk) is left out and its refusal
    /// returned; `also` is stored all the same. `Err`: nothing was stored.
    pub fn push_keyed_with(
        &self,
        msgs: Vec<(Message, String)>,
        mut also: impl FnMut(&rusqlite::Connection) -> rusqlite::Result<()>,
    ) -> Result<Vec<OutboxError>, OutboxError> {
        // Of several messages with one key, the last is all the cloud needs.
        let mut last: std::collections::HashMap<String, Message> = Default::default();
        let mut order = Vec::new();
        for (msg, key) in msgs {
            if last.insert(key.clone(), msg).is_none() {
                order.push(key);
            }
        }
        let db = crate::db::lock(&self.db);
        let mut st = self.state();
        let (mut seq, mut bytes) = (st.seq, st.bytes);
        let room = st.room.left(&db, kedge_core::clock::monotonic_ms());
        let (mut rows, mut refused, mut written) = (Vec::new(), Vec::new(), 0u64);
        for key in order {
            let Some(msg) = last.remove(&key) else {
                continue;
            };
            let text = msg.encode();
            let old = st.stored.get(&key).map_or(0, |(_, len)| *len);
            let next = bytes - old + text.len() as u64;
            if next > self.max_bytes {
                refused.push(self.refuse());
                continue;
            }
            if written + text.len() as u64 > room {
                refused.push(OutboxError::DiskFull);
                continue;
            }
            seq += 1;
            bytes = next;
            written += text.len() as u64;
            rows.push((key, seq, text, msg));
        }
        in_transaction(&db, || {
            also(&db)?;
            let mut insert = db.prepare_cached(
                "INSERT OR REPLACE INTO outbox (key, seq, msg) VALUES (?1, ?2, ?3)",
            )?;
            for (key, seq, text, _) in &rows {
                insert.execute(params![key, *seq as i64, text])?;
            }
            Ok(())
        })?;
        // Only what is committed is offered for sending.
        (st.seq, st.bytes) = (seq, bytes);
        st.room.written += written;
        let queued = !rows.is_empty();
        for (key, seq, text, msg) in rows {
            st.stored.insert(key.clone(), (seq, text.len() as u64));
            st.queue.offer(entry(key, seq, msg));
        }
        drop(st);
        if queued {
            self.wake.notify_one();
        }
        Ok(refused)
    }

    /// Queues `msg` under `key` in memory only, replacing the last one of that key: for a
    /// message of which the cloud needs only the newest and which comes again within a period
    /// (a Lease renewal). Nothing is written to disk for it: lost in a crash, the next one takes
    /// its place; and an idle edge does not run its database every ten seconds.
    pub fn push_volatile(&self, msg: Message, key: &str) {
        let mut st = self.state();
        st.seq += 1;
        let seq = st.seq;
        st.volatile.insert(key.to_string());
        st.queue.offer(entry(key.to_string(), seq, msg));
        drop(st);
        self.wake.notify_one();
    }

    /// Counts and reports a message that did not fit.
    fn refuse(&self) -> OutboxError {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            max = self.max_bytes,
            "edge outbox full: a message for the cloud was dropped"
        );
        OutboxError::Full {
            max: self.max_bytes,
        }
    }

    /// Stores unkeyed messages (eventbus→rest uploads) in one transaction: one commit for a
    /// burst rather than one each, which was most of what an upload cost. Returns how many were
    /// stored: the first ones, up to one that does not fit (in the outbox's bound, or on the
    /// disk); the caller holds the rest back and offers them again.
    pub fn push_many(&self, msgs: Vec<Message>) -> Result<usize, OutboxError> {
        let db = crate::db::lock(&self.db);
        let mut st = self.state();
        let (mut seq, mut bytes) = (st.seq, st.bytes);
        let room = st.room.left(&db, kedge_core::clock::monotonic_ms());
        let mut rows = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let text = msg.encode();
            let more = bytes - st.bytes + text.len() as u64;
            if bytes + text.len() as u64 > self.max_bytes || more > room {
                break;
            }
            seq += 1;
            bytes += text.len() as u64;
            rows.push((msg, seq, text));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        in_transaction(&db, || {
            let mut insert =
                db.prepare_cached("INSERT INTO outbox (key, seq, msg) VALUES (?1, ?2, ?3)")?;
            for (msg, seq, text) in &rows {
                insert.execute(params![msg.header.id, *seq as i64, text])?;
            }
            Ok(())
        })?;
        // Only what is committed is offered for sending.
        st.room.written += bytes - st.bytes;
        (st.seq, st.bytes) = (seq, bytes);
        let stored = rows.len();
        for (msg, seq, text) in rows {
            st.stored
                .insert(msg.header.id.clone(), (seq, text.len() as u64));
            st.queue.offer(entry(msg.header.id.clone(), seq, msg));
        }
        drop(st);
        if stored > 0 {
            self.wake.notify_one();
        }
        Ok(stored)
    }

    /// Messages to send now (new ones, and re-sends of unacked ones).
    pub fn poll(&self, now_ms: u64) -> Vec<Message> {
        self.state().queue.poll(now_ms, usize::MAX)
    }

    /// The cloud acknowledged `parent_msg_id`: the message leaves the outbox.
    pub fn ack(&self, parent_msg_id: &str) -> Result<(), OutboxError> {
        self.ack_many(&[parent_msg_id])
    }

    /// The cloud acknowledged these messages: they leave the outbox, in one transaction.
    pub fn ack_many(&self, parent_msg_ids: &[&str]) -> Result<(), OutboxError> {
        let acked: Vec<_> = {
            let mut st = self.state();
            let acked: Vec<_> = parent_msg_ids
                .iter()
                .filter_map(|id| st.queue.ack(id))
                .collect();
            // What was kept in memory only leaves without touching the database.
            let (volatile, stored): (Vec<_>, Vec<_>) = acked
                .into_iter()
                .partition(|a| st.volatile.contains(&a.uid));
            for a in volatile {
                st.queue.forget(&a.uid);
            }
            stored
        };
        if acked.is_empty() {
            return Ok(());
        }
        let db = crate::db::lock(&self.db);
        in_transaction(&db, || {
            let mut delete =
                db.prepare_cached("DELETE FROM outbox WHERE key = ?1 AND seq <= ?2")?;
            for a in &acked {
                delete.execute(params![a.uid, a.rv as i64])?;
            }
            Ok(())
        })?;
        let mut st = self.state();
        for a in &acked {
            st.queue.forget(&a.uid);
            // Gone from the database unless a newer message of its key replaced it meanwhile.
            let gone = st.stored.get(&a.uid).is_some_and(|(seq, _)| *seq <= a.rv);
            if gone && let Some((_, len)) = st.stored.remove(&a.uid) {
                st.bytes -= len;
            }
        }
        // A place in the window opened: send what waits now, not at the pump's next tick
        // (that capped eventbus→rest at 64 messages per 200 ms).
        if st.queue.pending() > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The connection ended: unacked messages are sent again first on the next one.
    pub fn disconnected(&self) {
        self.state().queue.disconnected();
    }

    /// Messages waiting (sent or not) for the cloud's ack.
    pub fn len(&self) -> usize {
        let st = self.state();
        st.queue.pending() + st.queue.inflight()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages refused because the outbox was full, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of messages waiting.
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(i: u64) -> Message {
        Message::new(
            "edged",
            "resource",
            "update",
            "null/nodestatus/n",
            json!({"i": i}),
        )
    }

    #[test]
    fn keyed_messages_coalesce_others_queue_and_everything_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.db");
        {
            let o = Outbox::open(&path, DEFAULT_MAX_BYTES).expect("open");
            for i in 0..1000 {
                o.push(status(i), Some("nodestatus")).expect("push");
            }
            for i in 0..5 {
                o.push(status(i), None).expect("push");
            }
            assert_eq!(o.len(), 6);
        }
        let o = Outbox::open(&path, DEFAULT_MAX_BYTES).expect("reopen");
        assert_eq!(o.len(), 6, "nothing is lost by a restart");
        let sent = o.poll(0);
        assert_eq!(sent.len(), 6);
        assert_eq!(
            sent.iter()
                .filter(|m| m.content == json!({"i": 999}))
                .count(),
            1,
            "the latest status"
        );
        for m in &sent {
            o.ack(&m.header.id).expect("ack");
        }
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
        assert!(
            Outbox::open(&path, DEFAULT_MAX_BYTES)
                .expect("reopen")
                .is_empty(),
            "acked means gone"
        );
    }

    #[test]
    fn volatile_messages_coalesce_are_acked_and_are_not_kept_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.db");
        {
            let o = Outbox::open(&path, DEFAULT_MAX_BYTES).expect("open");
            o.push_volatile(status(1), "lease");
            o.push_volatile(status(2), "lease");
            assert_eq!(o.len(), 1, "the newest replaces the last");
            let sent = o.poll(0);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].content, json!({"i": 2}));
            o.ack(&sent[0].header.id).expect("ack");
            assert!(o.is_empty());
            o.push_volatile(status(3), "lease");
            assert_eq!(o.bytes(), 0, "not counted against the disk bound");
        }
        let o = Outbox::open(&path, DEFAULT_MAX_BYTES).expect("reopen");
        assert!(o.is_empty(), "not stored: a restart forgets it");
    }

    #[test]
    fn a_batch_is_stored_at_once_and_acked_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.db");
        {
            let o = Outbox::open(&path, DEFAULT_MAX_BYTES).expect("open");
            assert_eq!(
                o.push_many((0..10).map(status).collect()).expect("batch"),
                10
            );
            let sent = o.poll(0);
            assert_eq!(sent.len(), 10);
            let ids: Vec<&str> = sent[..4].iter().map(|m| m.header.id.as_str()).collect();
            o.ack_many(&ids).expect("acks");
            assert_eq!(o.len(), 6);
        }
        let o = Outbox::open(&path, DEFAULT_MAX_BYTES).expect("reopen");
        let left: Vec<_> = o.poll(0).iter().map(|m| m.content["i"].clone()).collect();
        assert_eq!(
            left,
            (4..10).map(|i| json!(i)).collect::<Vec<_>>(),
            "in order"
        );
    }

    #[test]
    fn the_disk_is_measured_again_after_a_second_or_when_little_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("edge.db"), DEFAULT_MAX_BYTES).expect("open");
        let db = crate::db::lock(&o.db);
        let fake = 1 << 50;
        let mut room = Room {
            measured: Some((1_000, fake)),
            written: 10,
        };
        assert_eq!(
            room.left(&db, 1_500),
            fake - 10,
            "trusted within the second"
        );
        let measured = room.left(&db, 2_000);
        assert_ne!(measured, fake, "measured again after it");
        assert_eq!(room.written, 0);
        let mut low = Room {
            measured: Some((1_000, ROOM_MARGIN + 5)),
            written: 10,
        };
        assert_ne!(
            low.left(&db, 1_001),
            ROOM_MARGIN - 5,
            "measured at every write when low"
        );
    }

    fn count(o: &Outbox, table: &str) -> i64 {
        let db = crate::db::lock(&o.db);
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn keyed_messages_commit_with_the_callers_writes_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("edge.db"), DEFAULT_MAX_BYTES).expect("open");
        crate::db::lock(&o.db)
            .execute_batch("CREATE TABLE mine (v INTEGER NOT NULL)")
            .expect("table");
        let msgs = |keys: &[&str]| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (status(i as u64), k.to_string()))
                .collect::<Vec<_>>()
        };
        let write =
            |db: &rusqlite::Connection| db.execute("INSERT INTO mine VALUES (1)", []).map(drop);
        let refused = o
            .push_keyed_with(msgs(&["a", "b", "a"]), write)
            .expect("stored");
        assert!(refused.is_empty());
        assert_eq!((count(&o, "mine"), count(&o, "outbox")), (1, 2));
        let sent = o.poll(0);
        assert_eq!(sent.len(), 2, "of one key, the last only");
        assert!(sent.iter().any(|m| m.content == json!({"i": 2})));

        // The caller's write fails: its messages are not stored or queued either.
        let fail =
            |db: &rusqlite::Connection| db.execute("INSERT INTO mine VALUES (NULL)", []).map(drop);
        assert!(o.push_keyed_with(msgs(&["c"]), fail).is_err());
        assert_eq!((count(&o, "mine"), count(&o, "outbox")), (1, 2));
        assert!(o.poll(0).is_empty(), "nothing new to send");
    }

    #[test]
    fn a_message_that_does_not_fit_is_refused_and_the_callers_writes_still_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("edge.db"), 300).expect("open");
        crate::db::lock(&o.db)
            .execute_batch("CREATE TABLE mine (v INTEGER NOT NULL)")
            .expect("table");
        let msgs = (0..10).map(|i| (status(i), format!("k{i}"))).collect();
        let write =
            |db: &rusqlite::Connection| db.execute("INSERT INTO mine VALUES (1)", []).map(drop);
        let refused = o.push_keyed_with(msgs, write).expect("stored");
        assert!(!refused.is_empty());
        assert!(
            refused
                .iter()
                .all(|e| matches!(e, OutboxError::Full { max: 300 }))
        );
        assert_eq!(count(&o, "mine"), 1);
        assert_eq!(count(&o, "outbox") as usize, 10 - refused.len());
        assert!(o.bytes() <= 300);
    }

    #[tokio::test]
    async fn an_ack_that_frees_the_window_wakes_the_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("edge.db"), DEFAULT_MAX_BYTES).expect("open");
        for i in 0..100 {
            o.push(status(i), None).expect("push");
        }
        let sent = o.poll(0);
        assert_eq!(sent.len(), 64, "the window");
        // Consume the wake-ups the pushes left.
        o.wake.notified().await;
        o.ack(&sent[0].header.id).expect("ack");
        tokio::time::timeout(std::time::Duration::from_secs(5), o.wake.notified())
            .await
            .expect("woken by the ack");
        assert_eq!(o.poll(0).len(), 1, "one more fits");
    }

    #[test]
    fn unacked_messages_are_resent_and_a_full_outbox_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Outbox::open(&dir.path().join("edge.db"), 400).expect("open");
        o.push(status(1), None).expect("push");
        let first = o.poll(0);
        o.disconnected();
        assert_eq!(
            o.poll(1)[0].header.id,
            first[0].header.id,
            "re-sent after a reconnect"
        );
        let mut full = None;
        for i in 0..10 {
            if let Err(e) = o.push(status(i), None) {
                full = Some(e);
                break;
            }
        }
        assert!(
            matches!(full, Some(OutboxError::Full { max: 400 })),
            "{full:?}"
        );
        assert_eq!(o.refused(), 1, "counted for kedge_edge_outbox_refused");
        let before = o.len();
        assert_eq!(o.push_many(vec![status(20), status(21)]).expect("batch"), 0);
        assert_eq!(
            (o.len(), o.refused()),
            (before, 1),
            "a batch that does not fit is held back by its caller, not dropped"
        );
    }
}
