//! Watches: a chunked stream of `{"type": …, "object": …}` lines fed from the store's revision
//! log. Each watch remembers the last revision it has scanned and, when the store's revision
//! moves, reads the log from there, so a slow client never loses events; only a client so slow
//! that its position is compacted away gets `410 Gone` (and relists, as clients do).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::api::Api;
use crate::call::{Call, Filter, served_json, served_value};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::store::{EventType, Stored};
use crate::table;

/// How long a watch lasts when the client does not say (kube-apiserver picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Watch {
    api: Arc<Api>,
    res: Arc<Resource>,
    version: String,
    namespace: Option<String>,
    filter: Filter,
    bookmarks: bool,
    table: Option<String>,
    deadline: Instant,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
}

pub fn start(api: Arc<Api>, call: &Call) -> Result<Response, ApiError> {
    let rv = match call.query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {v:?}: must be an integer"
            ))
        })?),
    };
    let timeout = call
        .query
        .u64("timeoutSeconds")?
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let table = crate::table::wants_table(
        call.headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    )
    .then(|| {
        call.query
            .get("includeObject")
            .unwrap_or("Metadata")
            .to_string()
    });
    let (tx, rx) = mpsc::channel(64);
    let content_type = if table.is_some() {
        table::CONTENT_TYPE
    } else {
        "application/json"
    };
    let w = Watch {
        api,
        res: call.path.res.clone(),
        version: call.path.version.clone(),
        namespace: call.path.namespace.clone(),
        filter: Filter::from_query(&call.query)?,
        bookmarks: call.query.flag("allowWatchBookmarks"),
        table,
        deadline: Instant::now() + timeout,
        tx,
    };
    tokio::spawn(w.run(rv));
    let mut resp = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    Ok(resp)
}

impl Watch {
    async fn run(self, from: Option<u64>) {
        let key = self.res.key();
        let mut revs = self.api.store.subscribe();
        revs.borrow_and_update();
        let mut last = match from {
            Some(rv) => rv,
            None => {
                let (items, rev) = self.api.store.list(&key, self.namespace.as_deref());
                for o in items.iter().filter(|o| self.filter.matches(o)) {
                    if !self.send(EventType::Added.as_str(), o).await {
                        return;
                    }
                }
                rev
            }
        };
        let mut bookmark = tokio::time::interval(self.api.bookmark_interval);
        bookmark.set_missed_tick_behavior(MissedTickBehavior::Delay);
        bookmark.reset();
        loop {
            revs.borrow_and_update();
            let rev = self.api.store.revision();
            let events = match self.api.store.events_since(&key, last) {
                Ok(evs) => evs,
                Err(exp) => {
                    let msg = format!(
                        "too old resource version: {} ({})",
                        exp.requested, exp.oldest
                    );
                    let status = ApiError::gone(msg).status();
                    self.push(line(
                        "ERROR",
                        &serde_json::to_vec(&status).unwrap_or_default(),
                    ))
                    .await;
                    return;
                }
            };
            for e in events.iter().filter(|e| e.rv <= rev) {
                let in_ns = self
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == e.obj.namespace);
                if !in_ns {
                    continue;
                }
                let before = e.prev.as_ref().map(|p| self.filter.matches(p));
                let Some(kind) = seen_as(e.kind, before, self.filter.matches(&e.obj)) else {
                    continue;
                };
                if !self.send(kind.as_str(), &e.obj).await {
                    return;
                }
            }
            last = last.max(rev);
            tokio::select! {
                changed = revs.changed() => if changed.is_err() { return },
                _ = bookmark.tick(), if self.bookmarks && self.table.is_none() => {
                    let obj = json!({"kind": self.res.kind, "apiVersion": self.res.api_version(&self.version),
                                     "metadata": {"resourceVersion": last.to_string()}});
                    if !self.push(line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    async fn send(&self, kind: &str, obj: &Stored) -> bool {
        let body = match &self.table {
            None => served_json(&self.res, &self.version, obj),
            Some(include) => {
                let v = served_value(&self.res, &self.version, obj);
                let t = table::render(&self.res, &self.version, &[v], json!({}), include);
                Bytes::from(serde_json::to_vec(&t).unwrap_or_default())
            }
        };
        self.push(line(kind, &body)).await
    }

    async fn push(&self, chunk: Bytes) -> bool {
        self.tx.send(Ok(chunk)).await.is_ok()
    }
}

/// How a change looks through a selector: an object that moves into the selection is ADDED, one
/// that moves out is DELETED (as kube-apiserver does). `before` is whether the previous version
/// matched, when known.
fn seen_as(kind: EventType, before: Option<bool>, now: bool) -> Option<EventType> {
    use EventType::*;
    match (kind, before, now) {
        (Added | Deleted, _, true) => Some(kind),
        (Modified, Some(false), true) => Some(Added),
        (Modified, Some(true), false) => Some(Deleted),
        (Modified, None | Some(true), true) => Some(Modified),
        _ => None,
    }
}

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object);
    b.put_slice(b"}\n");
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    #[test]
    fn selectors_turn_moves_into_adds_and_deletes() {
        assert_eq!(seen_as(Modified, Some(false), true), Some(Added));
        assert_eq!(seen_as(Modified, Some(true), false), Some(Deleted));
        assert_eq!(seen_as(Modified, Some(true), true), Some(Modified));
        assert_eq!(seen_as(Modified, Some(false), false), None);
        assert_eq!(seen_as(Modified, None, true), Some(Modified));
        assert_eq!(seen_as(Added, None, false), None);
        assert_eq!(seen_as(Deleted, Some(true), true), Some(Deleted));
    }
}
