//! What the controllers that push objects to edges share: a reflector-backed watch calling
//! back on every change, and the delivery of one object version (or of its deletion).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kedge_core::delivery::Outgoing;
use kedge_core::envelope::{Message, group, op};
use kedge_core::resource;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cloudhub::records::SyncRecord;

/// Watches `api` through a reflector (kept in `writer`'s store), calling
/// `on(ctx, object, deleted)` for each change.
pub fn watch<K, C>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    ctx: Arc<C>,
    on: fn(&C, &K, bool),
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    C: Send + Sync + 'static,
{
    watch_with_done(api, writer, ctx, on, |_| {});
}

/// Like [`watch`], also calling `done(ctx)` after each complete (re)list: the reflector's store
/// takes a list's objects only once it is complete, so what depends on the whole store must
/// look again then.
pub fn watch_with_done<K, C>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    ctx: Arc<C>,
    on: fn(&C, &K, bool),
    done: fn(&C),
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    C: Send + Sync + 'static,
{
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => on(&ctx, &o, false),
                Ok(watcher::Event::Delete(o)) => on(&ctx, &o, true),
                Ok(watcher::Event::InitDone) => done(&ctx),
                Ok(_) => {}
                Err(e) => log_watch_error(&e, "watch"),
            }
        }
    });
}

/// A Kubernetes API error on one readable line: the API's own message and code, not its
/// `Status` as Debug.
pub fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => {
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                let next = c.to_string();
                if !text.contains(&next) {
                    text.push_str(": ");
                    text.push_str(&next);
                }
                cause = c.source();
            }
            text
        }
    }
}

/// Logs a watch error: a warning, unless it is the history moving past the watch (410 Gone),
/// which the watcher answers by listing again, as kube-rs does by design, or the API client's
/// own worker gone (the process is stopping: its runtime drops tasks in no particular order).
pub fn log_watch_error(e: &watcher::Error, what: &str) {
    match e {
        watcher::Error::WatchError(s) if s.code == 410 => {
            tracing::debug!(error = %brief_watch(e), "{what}: relisting")
        }
        _ if client_closed(e) => tracing::debug!(error = %brief_watch(e), "{what}: stopping"),
        _ => tracing::warn!(error = %brief_watch(e), "{what}"),
    }
}

/// The kube client's request buffer has no worker any more: it only ends with the runtime.
fn client_closed(e: &watcher::Error) -> bool {
    let (watcher::Error::InitialListFailed(k)
    | watcher::Error::WatchStartFailed(k)
    | watcher::Error::WatchFailed(k)) = e
    else {
        return false;
    };
    matches!(k, kube::Error::Service(s) if s.is::<tower::buffer::error::Closed>())
}

pub fn brief_watch(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => brief(k),
        watcher::Error::WatchError(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

pub fn message(
    token: &str,
    namespace: &str,
    name: &str,
    rv: u64,
    delete: bool,
    content: serde_json::Value,
) -> Message {
    let operation = if delete { op::DELETE } else { op::UPDATE };
    let res = resource::object(namespace, token, name);
    Message::new("edgecontroller", group::RESOURCE, operation, &res, content)
        .with_resource_version(rv.to_string())
}

/// The delivery of this version of `obj` (`token` is its resource-string type).
pub fn outgoing<K: kube::Resource + Serialize>(
    obj: &K,
    token: &str,
    delete: bool,
) -> Option<Outgoing> {
    let meta = obj.meta();
    let uid = meta.uid.clone()?;
    let rv: u64 = meta.resource_version.as_deref()?.parse().ok()?;
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone()?;
    let content = serde_json::to_value(obj).ok()?;
    let hash = crate::placement::content_hash(kedge_core::resource::Kind::of(token), &content);
    let msg = message(token, &ns, &name, rv, delete, content);
    Some(Outgoing {
        uid,
        rv,
        hash,
        delete,
        msg,
    })
}

/// The deletion of an object the node acknowledged and should no longer have.
pub fn deletion(r: &SyncRecord) -> Outgoing {
    let ns = r.namespace.as_deref().unwrap_or("");
    let content = serde_json::json!({"metadata": {"name": r.name, "namespace": ns, "uid": r.uid}});
    Outgoing {
        uid: r.uid.clone(),
        rv: r.rv,
        hash: 0,
        delete: true,
        msg: message(
            r.kind.token().unwrap_or_default(),
            ns,
            &r.name,
            r.rv,
            true,
            content,
        ),
    }
}

/// Creates namespace `name` unless it exists.
pub async fn create_namespace(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&kube::api::PostParams::default(), &ns).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}
