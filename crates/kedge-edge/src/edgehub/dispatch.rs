//! What the cloud sends, routed by its parsed kind to the component that handles it, as
//! KubeEdge's EdgeHub routes by group: the cloud's answers to what the outbox sent go to the
//! outbox, object changes to MetaManager, rest→eventbus publishes to EventBus, rest→servicebus
//! calls to ServiceBus.

use std::sync::Arc;

use kedge_core::envelope::{Message, group, op};
use tokio::sync::{mpsc, oneshot, watch};

use super::outbox::Outbox;

/// Where a message from the cloud goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downlink {
    /// `response` or `error` to a message the outbox sent.
    Answer,
    /// An object change (`insert`/`update`/`patch`/`delete` of `<ns>/<type>/<name>`).
    Object,
    /// rest→eventbus: publish the content on the broker.
    Publish,
    /// rest→servicebus: call a local app (the operation is the HTTP method).
    ServiceCall,
    /// A stock cloudcore's `subscribe`/`unsubscribe` of an eventbus rule's topic, or
    /// `start`/`stop` of a servicebus rule's target URL (kedge's cloud sends the Rule itself);
    /// MetaManager keeps it.
    Subscription,
    /// Nothing here handles it.
    Unknown,
}

pub fn classify(m: &Message) -> Downlink {
    let (g, o) = (m.route.group.as_str(), m.route.operation.as_str());
    match o {
        op::RESPONSE | op::ERROR => Downlink::Answer,
        kedge_core::rule::OP_PUBLISH if g == group::USER => Downlink::Publish,
        OP_SUBSCRIBE | OP_UNSUBSCRIBE | OP_START | OP_STOP if g == group::USER => {
            Downlink::Subscription
        }
        method if g == group::USER && kedge_core::servicebus::is_method(method) => {
            Downlink::ServiceCall
        }
        op::INSERT | op::UPDATE | op::PATCH | op::DELETE if g == group::RESOURCE => {
            Downlink::Object
        }
        _ => Downlink::Unknown,
    }
}

pub const OP_SUBSCRIBE: &str = "subscribe";
pub const OP_UNSUBSCRIBE: &str = "unsubscribe";
pub const OP_START: &str = "start";
pub const OP_STOP: &str = "stop";

/// What the cloud last said of the node's Lease (a stock cloudcore updates a Lease only at the
/// resourceVersion it holds, as kube-apiserver requires).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LeaseSeen {
    #[default]
    Unknown,
    Absent,
    Version(String),
}

/// The Lease state an answer tells, if it answers a Lease message: KubeEdge's `ObjectResp`
/// with the Lease, or with the API's refusal (404: there is none; anything else, a conflict
/// say: read it again).
pub fn lease_seen(m: &Message) -> Option<LeaseSeen> {
    let r = kedge_core::resource::ObjectRef::parse(&m.route.resource).ok()?;
    if r.kind != "lease" || !m.content.is_object() {
        return None;
    }
    if let Some(rv) = m.content.pointer("/Object/metadata/resourceVersion") {
        return Some(LeaseSeen::Version(rv.as_str()?.to_string()));
    }
    match m
        .content
        .pointer("/Err/ErrStatus/code")
        .and_then(|c| c.as_u64())
    {
        Some(404) => Some(LeaseSeen::Absent),
        Some(_) => Some(LeaseSeen::Unknown),
        None => None,
    }
}

/// Answers awaited by the id of the message they answer (ServiceBus waits for the cloud's
/// answer to an app's servicebus→rest request); the others settle the outbox.
#[derive(Default)]
pub struct Awaited(std::sync::Mutex<std::collections::HashMap<String, oneshot::Sender<Message>>>);

/// One awaited answer; dropping it stops waiting.
pub struct Answer {
    awaited: Arc<Awaited>,
    id: String,
    rx: oneshot::Receiver<Message>,
}

impl Awaited {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, oneshot::Sender<Message>>>
    {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the answer to the message with `id` (register before sending it).
    pub fn expect(self: &Arc<Self>, id: &str) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.map().insert(id.to_string(), tx);
        Answer {
            awaited: self.clone(),
            id: id.to_string(),
            rx,
        }
    }

    /// Hands `m` to whoever waits for it; gives it back if nobody does.
    fn take(&self, m: Message) -> Option<Message> {
        let waiter = self.map().remove(&m.header.parent_id);
        match waiter {
            Some(tx) => tx.send(m).err(),
            None => Some(m),
        }
    }
}

impl Answer {
    /// The answer, or `None` if it does not come within `within`.
    pub async fn within(mut self, within: std::time::Duration) -> Option<Message> {
        tokio::time::timeout(within, &mut self.rx).await.ok()?.ok()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.awaited.map().remove(&self.id);
    }
}

/// The components' inboxes.
#[derive(Clone)]
pub struct Routes {
    pub objects: mpsc::Sender<Message>,
    pub publishes: mpsc::Sender<Message>,
    pub calls: mpsc::Sender<Message>,
    pub lease: Arc<watch::Sender<LeaseSeen>>,
    pub awaited: Arc<Awaited>,
}

/// The receiving ends of [`Routes`], one per component.
pub struct Inboxes {
    pub objects: mpsc::Receiver<Message>,
    pub publishes: mpsc::Receiver<Message>,
    pub calls: mpsc::Receiver<Message>,
    pub lease: watch::Receiver<LeaseSeen>,
}

/// Bounded inboxes: a component that falls behind slows the cloud down (TCP back-pressure)
/// rather than the edge's memory growing.
pub fn inboxes() -> (Routes, Inboxes) {
    let (objects, o) = mpsc::channel(1024);
    let (publishes, p) = mpsc::channel(1024);
    let (calls, c) = mpsc::channel(1024);
    let (lease, l) = watch::channel(LeaseSeen::default());
    (
        Routes {
            objects,
            publishes,
            calls,
            lease: Arc::new(lease),
            awaited: Arc::default(),
        },
        Inboxes {
            objects: o,
            publishes: p,
            calls: c,
            lease: l,
        },
    )
}

/// At most this many answers leave the outbox in one commit.
const BURST: usize = 512;

pub(super) async fn run(mut down: mpsc::Receiver<Message>, routes: Routes, outbox: Arc<Outbox>) {
    let mut next = None;
    loop {
        let m = match next.take() {
            Some(m) => m,
            None => match down.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let to = match classify(&m) {
            Downlink::Answer => {
                // Answers that arrive together leave the outbox in one commit.
                let mut answers: Vec<Message> = routes.awaited.take(m).into_iter().collect();
                while answers.len() < BURST
                    && let Ok(more) = down.try_recv()
                {
                    if classify(&more) == Downlink::Answer {
                        answers.extend(routes.awaited.take(more));
                    } else {
                        next = Some(more);
                        break;
                    }
                }
                for seen in answers.iter().filter_map(lease_seen) {
                    routes.lease.send_replace(seen);
                }
                settle(&outbox, &answers);
                continue;
            }
            Downlink::Object => &routes.objects,
            Downlink::Publish => &routes.publishes,
            Downlink::Subscription => &routes.objects,
            Downlink::ServiceCall => &routes.calls,
            Downlink::Unknown => {
                tracing::debug!(resource = %m.route.resource, operation = %m.route.operation, "nothing at the edge handles this message");
                continue;
            }
        };
        if to.send(m).await.is_err() {
            return;
        }
    }
}

/// The cloud applied (`response`) or refused for good (`error`) what the outbox sent.
fn settle(outbox: &Outbox, answers: &[Message]) {
    for m in answers.iter().filter(|m| m.route.operation == op::ERROR) {
        tracing::warn!(resource = %m.route.resource, reason = %m.content, "the cloud refused a message");
    }
    let ids: Vec<&str> = answers
        .iter()
        .map(|m| m.header.parent_id.as_str())
        .collect();
    if let Err(e) = outbox.ack_many(&ids) {
        tracing::warn!(error = %e, "outbox");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(g: &str, o: &str, res: &str) -> Message {
        Message::new("cloud", g, o, res, json!({}))
    }

    #[tokio::test]
    async fn nothing_after_a_burst_of_answers_is_lost() {
        let dir = tempfile::tempdir().expect("dir");
        let outbox = Arc::new(Outbox::open(&dir.path().join("edge.db"), 1 << 20).expect("outbox"));
        let (routes, mut inboxes) = inboxes();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run(rx, routes, outbox));
        let answer = msg(group::RESOURCE, op::RESPONSE, "");
        let (a, b) = (
            msg(group::RESOURCE, op::UPDATE, "default/pod/a"),
            msg(group::RESOURCE, op::UPDATE, "default/pod/b"),
        );
        for m in [answer.clone(), answer, a.clone(), b.clone()] {
            tx.send(m).await.expect("send");
        }
        let got = |m: Option<Message>| m.map(|m| m.route.resource);
        let within = std::time::Duration::from_secs(5);
        let first = tokio::time::timeout(within, inboxes.objects.recv()).await;
        assert_eq!(got(first.expect("in time")), Some(a.route.resource));
        let second = tokio::time::timeout(within, inboxes.objects.recv()).await;
        assert_eq!(got(second.expect("in time")), Some(b.route.resource));
    }

    #[test]
    fn a_cloudcore_answer_tells_the_leases_version() {
        let answer = |content: serde_json::Value| {
            Message::new(
                "edgecontroller",
                group::RESOURCE,
                op::RESPONSE,
                "kube-node-lease/lease/n1",
                content,
            )
        };
        let found = answer(
            serde_json::json!({"Object": {"metadata": {"resourceVersion": "42"}}, "Err": null}),
        );
        assert_eq!(lease_seen(&found), Some(LeaseSeen::Version("42".into())));
        let absent =
            answer(serde_json::json!({"Object": null, "Err": {"ErrStatus": {"code": 404}}}));
        assert_eq!(lease_seen(&absent), Some(LeaseSeen::Absent));
        let conflict =
            answer(serde_json::json!({"Object": null, "Err": {"ErrStatus": {"code": 409}}}));
        assert_eq!(lease_seen(&conflict), Some(LeaseSeen::Unknown));
        assert_eq!(lease_seen(&answer(serde_json::json!("OK"))), None);
        let pod = Message::new(
            "edgecontroller",
            group::RESOURCE,
            op::RESPONSE,
            "default/pod/a",
            serde_json::json!({"Object": {"metadata": {"resourceVersion": "1"}}}),
        );
        assert_eq!(lease_seen(&pod), None);
    }

    #[test]
    fn messages_go_by_group_and_operation() {
        let cases = [
            (group::RESOURCE, op::RESPONSE, "", Downlink::Answer),
            (group::USER, op::ERROR, "", Downlink::Answer),
            (group::USER, "publish", "test", Downlink::Publish),
            (group::USER, "GET", "6666:/x", Downlink::ServiceCall),
            (group::USER, "PATCH", "6666:/x", Downlink::ServiceCall),
            (
                group::USER,
                "subscribe",
                "default/test",
                Downlink::Subscription,
            ),
            (
                group::USER,
                "unsubscribe",
                "default/test",
                Downlink::Subscription,
            ),
            (
                group::RESOURCE,
                "subscribe",
                "default/test",
                Downlink::Unknown,
            ),
            (
                group::RESOURCE,
                op::UPDATE,
                "default/pod/a",
                Downlink::Object,
            ),
            (
                group::RESOURCE,
                op::DELETE,
                "default/rule/r",
                Downlink::Object,
            ),
            (group::RESOURCE, op::INSERT, "null/node/n", Downlink::Object),
            (group::RESOURCE, "publish", "x", Downlink::Unknown),
            (group::USER, op::UPDATE, "default/pod/a", Downlink::Unknown),
            (group::TWIN, op::UPDATE, "x", Downlink::Unknown),
            (
                group::RESOURCE,
                op::QUERY,
                "default/pod/a",
                Downlink::Unknown,
            ),
        ];
        for (g, o, res, want) in cases {
            assert_eq!(classify(&msg(g, o, res)), want, "{g} {o}");
        }
    }
}
