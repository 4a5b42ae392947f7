//! How the cloud answers an edge's message, in the shape a stock edgecore waits for (kedge's
//! edge reads only the parent id, so one shape serves both):
//! - a write edged makes synchronously (node registration, Lease, `nodepatch`, `podpatch`) is
//!   answered with KubeEdge's `ObjectResp`, `{"Object": <the object as stored>, "Err": null}`,
//!   or `{"Object": null, "Err": {"ErrStatus": <metav1.Status>}}` for the API's refusal (a Lease
//!   not found yet, which kubelet then creates);
//! - everything else with `"OK"`;
//! - from `edgecontroller` in group `resource` — edgecore's EdgeHub hands a `response` to the
//!   waiting caller only in groups `resource` and `func`;
//! - device reports and `membership/detail` from `devicecontroller` in group `twin` on resource
//!   `twin`: DeviceTwin confirms what it sent only on a twin-group message with its id.

use kedge_core::envelope::{ACK_OK, Message, group, op};
use serde_json::{Value, json};

/// What an applied edge message is answered with.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `"OK"`.
    Ack,
    /// `ObjectResp` with the object.
    Object(Value),
    /// `ObjectResp` with the API's `Status` (a Kubernetes error for edged).
    Status(Value),
}

const EDGECONTROLLER: &str = "edgecontroller";
const DEVICECONTROLLER: &str = "devicecontroller";

/// DeviceTwin's request for its node's devices, sent on every connection (edge form).
pub const MEMBERSHIP_DETAIL: &str = "membership/detail";

/// Whether `resource` (edge form) is DeviceTwin's: a device report or a membership request.
pub fn is_twin(resource: &str) -> bool {
    crate::devicecontroller::report::parse(resource).is_some() || resource == MEMBERSHIP_DETAIL
}

/// The answer to `m`.
pub fn reply(m: &Message, a: &Answer) -> Message {
    let content = match a {
        Answer::Ack => Value::String(ACK_OK.into()),
        Answer::Object(o) => json!({"Object": o, "Err": null}),
        Answer::Status(s) => json!({"Object": null, "Err": {"ErrStatus": s}}),
    };
    let mut r = addressed(m, content);
    if let Answer::Object(o) = a
        && let Some(rv) = o
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
    {
        r.header.resource_version = rv.into();
    }
    r
}

/// An `error` answer: the edge drops the message (it can never be applied).
pub fn refusal(m: &Message, text: &str) -> Message {
    let mut r = addressed(m, Value::String(text.into()));
    r.route.operation = op::ERROR.into();
    r
}

fn addressed(m: &Message, content: Value) -> Message {
    let mut r = m.response(content);
    if is_twin(&m.route.resource) {
        r.route.source = DEVICECONTROLLER.into();
        r.route.group = group::TWIN.into();
        r.route.resource = group::TWIN.into();
    } else {
        r.route.source = EDGECONTROLLER.into();
        r.route.group = group::RESOURCE.into();
    }
    r
}

/// The `metav1.Status` of an API refusal, as the API sent it.
pub fn status_of(e: &kube::core::Status) -> Value {
    let mut s = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
    s["kind"] = json!("Status");
    s["apiVersion"] = json!("v1");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as edged sends it through MetaManager.
    fn from_edged(operation: &str, resource: &str, content: Value) -> Message {
        let mut m = Message::new("edged", "meta", operation, resource, content);
        m.header.id = "req-1".into();
        m
    }

    #[test]
    fn node_registration_is_answered_with_the_node_in_group_resource() {
        let m = from_edged(
            "insert",
            "null/node/n1",
            json!({"metadata": {"name": "n1"}}),
        );
        let node = json!({"kind": "Node", "metadata": {"name": "n1", "resourceVersion": "7"}});
        let r = reply(&m, &Answer::Object(node.clone()));
        let wire: Value = serde_json::from_str(&r.encode()).expect("json");
        assert_eq!(wire["header"]["parent_msg_id"], "req-1");
        assert_eq!(wire["header"]["resourceversion"], "7");
        assert_eq!(
            wire["route"],
            json!({"source": "edgecontroller", "group": "resource", "operation": "response",
                   "resource": "null/node/n1"})
        );
        assert_eq!(wire["content"], json!({"Object": node, "Err": null}));
    }

    #[test]
    fn a_lease_not_found_is_a_kubernetes_error_for_kubelet() {
        let m = from_edged("query", "kube-node-lease/lease/n1", Value::Null);
        let e: kube::core::Status = serde_json::from_value(json!({"status": "Failure",
            "message": "leases \"n1\" not found", "reason": "NotFound", "code": 404}))
        .expect("status");
        let r = reply(&m, &Answer::Status(status_of(&e)));
        assert_eq!(r.route.operation, "response");
        assert_eq!(r.content["Object"], Value::Null);
        assert_eq!(r.content["Err"]["ErrStatus"]["reason"], "NotFound");
        assert_eq!(r.content["Err"]["ErrStatus"]["code"], 404);
    }

    #[test]
    fn device_reports_are_confirmed_in_group_twin() {
        let m = Message::new(
            "twin",
            "resource",
            "update",
            "device/default/counter/twin/edge_updated",
            json!({}),
        );
        let r = reply(&m, &Answer::Ack);
        assert_eq!(
            (
                r.route.source.as_str(),
                r.route.group.as_str(),
                r.route.operation.as_str(),
                r.route.resource.as_str()
            ),
            ("devicecontroller", "twin", "response", "twin")
        );
        assert_eq!(r.content, json!("OK"));
        assert_eq!(r.header.parent_id, m.header.id);
        let detail = Message::new("twin", "resource", "get", "membership/detail", json!("{}"));
        assert_eq!(reply(&detail, &Answer::Ack).route.group, "twin");
    }

    #[test]
    fn a_refusal_is_an_error_in_the_same_group() {
        let m = from_edged("patch", "default/podpatch/web", json!("{}"));
        let r = refusal(&m, "pod default/web is not bound to node n1");
        assert_eq!(r.route.operation, "error");
        assert_eq!(r.route.group, "resource");
        assert_eq!(r.route.source, "edgecontroller");
        assert_eq!(r.content, json!("pod default/web is not bound to node n1"));
    }
}
