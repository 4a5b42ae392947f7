//! What a delivery becomes for a stock KubeEdge edgecore (kedge's edge takes the objects as
//! they are). Decided here, without sockets; `downstream` sends the result.
//! - A Device or DeviceModel comes from `devicecontroller` (edgecore's MetaManager hands only
//!   those to DeviceTwin and its DMI worker), as `insert` the first time a node gets it (the DMI
//!   worker registers the device with its mapper on insert, updates it on update). A Device the
//!   node gets for the first time is preceded by a `membership` message in group `twin` adding
//!   it, a deleted one by one removing it — DeviceTwin knows only devices membership gave it.
//! - A Rule with an eventbus source becomes `subscribe` of `<namespace>/<topic>` (its deletion
//!   `unsubscribe`), one with a servicebus source `start` of its `target_url` (its deletion
//!   `stop`), as cloudcore's router sends them. edgecore does not acknowledge these: they count
//!   as delivered once sent.

use kedge_core::envelope::{Message, group, op};
use kedge_core::json::str_at;
use kedge_core::resource::ObjectRef;
use serde_json::{Value, json};

/// What to send a stock edgecore for one delivery.
#[derive(Debug, Default)]
pub struct Translation {
    pub send: Vec<Message>,
    /// Whether edgecore acknowledges the delivery itself (otherwise it counts once sent).
    pub acknowledged: bool,
    /// What a rule enabled at the edge (to be disabled when the rule goes).
    pub enabled: Option<Enabled>,
}

/// What a rule enabled at a stock edgecore; a deleted Rule carries no spec, so it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enabled {
    /// An eventbus source's `<namespace>/<topic>`, subscribed.
    Topic(String),
    /// A servicebus source's `target_url`, started.
    Url(String),
}

const DEVICECONTROLLER: &str = "devicecontroller";
const ROUTER_EVENTBUS: &str = "router_eventbus";
const ROUTER_SERVICEBUS: &str = "router_servicebus";

/// The delivery `m` for a stock edgecore. `known`: the node acknowledged this object before;
/// `enabled`: what this rule enabled, if it is a rule's deletion.
pub fn for_kubeedge(m: Message, known: bool, enabled: Option<Enabled>) -> Translation {
    let kind = ObjectRef::parse(&m.route.resource)
        .map(|r| r.kind.to_string())
        .unwrap_or_default();
    match kind.as_str() {
        "device" | "devicemodel" => device(m, kind == "device", known),
        "rule" => rule(m, enabled),
        _ => Translation {
            send: vec![m],
            acknowledged: true,
            enabled: None,
        },
    }
}

fn device(mut m: Message, is_device: bool, known: bool) -> Translation {
    let delete = m.route.operation == op::DELETE;
    m.route.source = DEVICECONTROLLER.into();
    if !delete && !known {
        m.route.operation = op::INSERT.into();
    }
    let mut send = Vec::new();
    if is_device && (delete || !known) {
        send.push(membership(&m.content, delete));
    }
    send.push(m);
    Translation {
        send,
        acknowledged: true,
        enabled: None,
    }
}

/// The model (`<ns>/devicemodel/<name>`) a Device delivery needs at a stock edgecore first.
/// edgecore's EdgeHub hands consecutive messages to MetaManager in no fixed order, so a Device
/// sent right after its model can reach the DMI worker first, which then refuses it for good
/// ("device model … not found in cache"): the write loop holds such a Device while its model is
/// unacknowledged, and the queue re-sends it when due.
pub fn model_needed(m: &Message) -> Option<String> {
    let r = ObjectRef::parse(&m.route.resource).ok()?;
    if r.kind != "device" || m.route.operation == op::DELETE {
        return None;
    }
    let model = str_at(&m.content, "/spec/deviceModelRef/name");
    let ns = match str_at(&m.content, "/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    (!model.is_empty()).then(|| kedge_core::resource::object(ns, "devicemodel", model))
}

/// DeviceTwin's membership change for one device (`membership`, group `twin`).
fn membership(device: &Value, removed: bool) -> Message {
    let name = str_at(device, "/metadata/name");
    let ns = match str_at(device, "/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    let description = str_at(device, "/metadata/labels/description");
    let member = json!({"id": format!("{ns}/{name}"), "name": name, "description": description});
    let (added, gone) = match removed {
        false => (json!([member]), Value::Null),
        true => (Value::Null, json!([member])),
    };
    let mut m = Message::new(
        DEVICECONTROLLER,
        group::TWIN,
        op::UPDATE,
        "membership",
        Value::Null,
    );
    m.content = json!({
        "event_id": m.header.id,
        "timestamp": kedge_core::clock::now_ms(),
        "added_devices": added,
        "removed_devices": gone,
    });
    m
}

fn rule(m: Message, remembered: Option<Enabled>) -> Translation {
    let delete = m.route.operation == op::DELETE;
    let ns = m
        .content
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let source = |key: &str| m.content.pointer(&format!("/spec/sourceResource/{key}"));
    let enabled = match delete {
        true => remembered,
        false => match (source("topic"), source("target_url")) {
            (Some(Value::String(t)), _) => Some(Enabled::Topic(format!(
                "{ns}/{}",
                t.trim_start_matches('/')
            ))),
            (_, Some(Value::String(u))) => Some(Enabled::Url(u.clone())),
            _ => None,
        },
    };
    let Some(enabled) = enabled else {
        // Not a bus rule, or one whose source is not known any more: nothing to say.
        return Translation::default();
    };
    let (from, operation, resource) = match (&enabled, delete) {
        (Enabled::Topic(t), false) => (ROUTER_EVENTBUS, "subscribe", t),
        (Enabled::Topic(t), true) => (ROUTER_EVENTBUS, "unsubscribe", t),
        (Enabled::Url(u), false) => (ROUTER_SERVICEBUS, "start", u),
        (Enabled::Url(u), true) => (ROUTER_SERVICEBUS, "stop", u),
    };
    let mut s = Message::new(from, group::USER, operation, resource, Value::Null);
    s.header.id = m.header.id.clone();
    Translation {
        send: vec![s],
        acknowledged: false,
        enabled: (!delete).then_some(enabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (source, group, operation, resource).
    fn route(m: &Message) -> (&str, &str, &str, &str) {
        let r = &m.route;
        (&r.source, &r.group, &r.operation, &r.resource)
    }

    fn device_msg(operation: &str) -> Message {
        let d = json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "counter", "namespace": "default", "labels": {"description": "counter"}},
            "spec": {"nodeName": "n1", "deviceModelRef": {"name": "counter-model"}}});
        Message::new(
            "edgecontroller",
            "resource",
            operation,
            "default/device/counter",
            d,
        )
    }

    #[test]
    fn a_new_device_is_announced_by_membership_then_inserted() {
        let m = device_msg("update");
        let id = m.header.id.clone();
        let t = for_kubeedge(m, false, None);
        assert!(t.acknowledged);
        assert_eq!(t.send.len(), 2);
        let mem = &t.send[0];
        assert_eq!(
            route(mem),
            ("devicecontroller", "twin", "update", "membership")
        );
        assert_eq!(
            mem.content["added_devices"],
            json!([{"id": "default/counter", "name": "counter", "description": "counter"}])
        );
        assert_eq!(mem.content["removed_devices"], Value::Null);
        let dev = &t.send[1];
        assert_eq!(dev.route.source, "devicecontroller");
        assert_eq!(dev.route.operation, "insert");
        assert_eq!(
            dev.header.id, id,
            "edgecore acknowledges the object's own id"
        );
    }

    #[test]
    fn a_known_device_is_updated_and_a_deleted_one_removed() {
        let t = for_kubeedge(device_msg("update"), true, None);
        assert_eq!(t.send.len(), 1);
        assert_eq!(t.send[0].route.operation, "update");
        let t = for_kubeedge(device_msg("delete"), true, None);
        assert_eq!(t.send.len(), 2);
        assert_eq!(t.send[0].content["added_devices"], Value::Null);
        assert_eq!(
            t.send[0].content["removed_devices"][0]["id"],
            "default/counter"
        );
        assert_eq!(t.send[1].route.operation, "delete");
    }

    #[test]
    fn a_device_names_the_model_it_waits_for() {
        let mut m = device_msg("update");
        m.content = json!({"metadata": {"name": "counter", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "counter-model"}}});
        assert_eq!(
            model_needed(&m).as_deref(),
            Some("default/devicemodel/counter-model")
        );
        m.route.operation = "delete".into();
        assert_eq!(model_needed(&m), None);
        let model = Message::new(
            "edgecontroller",
            "resource",
            "update",
            "default/devicemodel/x",
            json!({}),
        );
        assert_eq!(model_needed(&model), None);
    }

    #[test]
    fn a_model_comes_from_devicecontroller_without_membership() {
        let m = Message::new(
            "edgecontroller",
            "resource",
            "update",
            "default/devicemodel/counter-model",
            json!({}),
        );
        let t = for_kubeedge(m, false, None);
        assert_eq!(t.send.len(), 1);
        assert_eq!(t.send[0].route.source, "devicecontroller");
        assert_eq!(t.send[0].route.operation, "insert");
    }

    #[test]
    fn an_eventbus_rule_is_a_subscription_to_its_namespaced_topic() {
        let rule = json!({"metadata": {"name": "my-rule-eventbus-rest", "namespace": "default"},
            "spec": {"source": "my-eventbus", "sourceResource": {"topic": "test", "node_name": "n1"},
                     "target": "my-rest", "targetResource": {"resource": "http://x/b"}}});
        let m = Message::new(
            "edgecontroller",
            "resource",
            "update",
            "default/rule/my-rule-eventbus-rest",
            rule,
        );
        let t = for_kubeedge(m, false, None);
        assert!(!t.acknowledged);
        assert_eq!(t.enabled, Some(Enabled::Topic("default/test".into())));
        assert_eq!(
            route(&t.send[0]),
            ("router_eventbus", "user", "subscribe", "default/test")
        );
        let gone = Message::new(
            "edgecontroller",
            "resource",
            "delete",
            "default/rule/my-rule-eventbus-rest",
            json!({"metadata": {"name": "my-rule-eventbus-rest", "namespace": "default"}}),
        );
        let t = for_kubeedge(
            gone.clone(),
            true,
            Some(Enabled::Topic("default/test".into())),
        );
        assert_eq!(t.send[0].route.operation, "unsubscribe");
        assert_eq!(t.send[0].route.resource, "default/test");
        assert!(for_kubeedge(gone, true, None).send.is_empty());
    }

    #[test]
    fn a_servicebus_rule_starts_its_target_url_as_cloudcore_does() {
        let url = "http://127.0.0.1:9000/echo";
        let rule = json!({"metadata": {"name": "sb", "namespace": "default"},
            "spec": {"source": "my-servicebus", "sourceResource": {"target_url": url, "node_name": "n1"},
                     "target": "my-rest", "targetResource": {"resource": "http://x/b"}}});
        let m = Message::new(
            "edgecontroller",
            "resource",
            "insert",
            "default/rule/sb",
            rule,
        );
        let t = for_kubeedge(m, false, None);
        assert!(!t.acknowledged);
        assert_eq!(t.enabled, Some(Enabled::Url(url.into())));
        assert_eq!(
            route(&t.send[0]),
            ("router_servicebus", "user", "start", url)
        );
        let gone = Message::new(
            "edgecontroller",
            "resource",
            "delete",
            "default/rule/sb",
            json!({"metadata": {"name": "sb", "namespace": "default"}}),
        );
        let t = for_kubeedge(gone, true, Some(Enabled::Url(url.into())));
        assert_eq!(
            route(&t.send[0]),
            ("router_servicebus", "user", "stop", url)
        );
    }

    #[test]
    fn other_objects_go_as_they_are() {
        let m = Message::new(
            "edgecontroller",
            "resource",
            "update",
            "default/pod/web",
            json!({}),
        );
        let t = for_kubeedge(m, false, None);
        assert!(t.acknowledged);
        assert_eq!(t.send[0].route.operation, "update");
        assert_eq!(t.send[0].route.source, "edgecontroller");
    }
}
