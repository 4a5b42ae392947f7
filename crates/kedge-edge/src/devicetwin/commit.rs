//! Group commit: device writes that arrive together — mapper reports on several connections, a
//! burst of MQTT messages — are stored in one transaction with their reports for the cloud,
//! then answered. One commit per report had bound a node's reports to the rate of its commits
//! on the edge's one connection (measured: 2,400 reports/s with 0.6 of the 2 cores idle).
//! A group is stored on the blocking pool, so the runtime's workers never wait on the disk;
//! while one is stored, the next gathers.

use std::sync::{Arc, Mutex};

use kedge_core::twin::TwinError;
use tokio::sync::{mpsc, oneshot};

use super::{Applied, DeviceTwin, Write};

/// Writes taken into one commit at most.
const MAX_GROUP: usize = 1024;
/// Requests waiting for a group; callers wait beyond it.
const QUEUE: usize = 1024;

type Answers = Vec<Result<Applied, TwinError>>;

/// Writes of one caller, answered together in order.
struct Request {
    writes: Vec<Write>,
    answer: oneshot::Sender<Answers>,
}

pub(super) struct Queue {
    tx: mpsc::Sender<Request>,
    /// Taken by [`DeviceTwin::run`].
    rx: Mutex<Option<mpsc::Receiver<Request>>>,
}

fn not_stored(n: usize, why: &str) -> Answers {
    (0..n)
        .map(|_| Err(TwinError::NotStored(why.to_string())))
        .collect()
}

impl Queue {
    pub(super) fn new() -> Queue {
        let (tx, rx) = mpsc::channel(QUEUE);
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Stores `writes` with whatever else is waiting; their answers, in order.
    pub(super) async fn write(&self, writes: Vec<Write>) -> Answers {
        let n = writes.len();
        let (answer, done) = oneshot::channel();
        if self.tx.send(Request { writes, answer }).await.is_err() {
            return not_stored(n, "the edge is stopping");
        }
        done.await
            .unwrap_or_else(|_| not_stored(n, "the edge is stopping"))
    }
}

impl DeviceTwin {
    /// Stores the writes queued, a group at a time.
    pub async fn run(self: Arc<Self>) {
        let rx = self
            .commit
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut rx) = rx else {
            return;
        };
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            let mut n = group[0].writes.len();
            while n < MAX_GROUP
                && let Ok(r) = rx.try_recv()
            {
                n += r.writes.len();
                group.push(r);
            }
            let mut writes = Vec::with_capacity(n);
            let mut callers = Vec::with_capacity(group.len());
            for r in group {
                callers.push((r.writes.len(), r.answer));
                writes.extend(r.writes);
            }
            let dt = self.clone();
            let answers = match tokio::task::spawn_blocking(move || dt.apply_many(writes)).await {
                Ok(a) => a,
                Err(e) => not_stored(n, &e.to_string()),
            };
            let mut answers = answers.into_iter();
            for (k, answer) in callers {
                let _ = answer.send(answers.by_ref().take(k).collect());
            }
        }
    }
}
