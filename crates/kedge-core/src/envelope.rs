//! The beehive message envelope: `{header, route, content}`, one JSON document per WebSocket text
//! frame. Field names, omissions and types follow KubeEdge (`model.Message`): `msg_id` is a UUID,
//! `timestamp` is milliseconds, empty strings are omitted, `route` is always present, `content` is
//! any JSON value (`null` when absent).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Operations (beehive, edge and CloudHub constants).
pub mod op {
    pub const INSERT: &str = "insert";
    pub const DELETE: &str = "delete";
    pub const QUERY: &str = "query";
    pub const UPDATE: &str = "update";
    pub const PATCH: &str = "patch";
    pub const UPLOAD: &str = "upload";
    pub const RESPONSE: &str = "response";
    pub const ERROR: &str = "error";
    pub const KEEPALIVE: &str = "keepalive";
}

/// Route groups.
pub mod group {
    pub const RESOURCE: &str = "resource";
    pub const TWIN: &str = "twin";
    pub const USER: &str = "user";
    pub const META: &str = "meta";
}

/// The content of an acknowledgement.
pub const ACK_OK: &str = "OK";

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    #[serde(rename = "msg_id", default)]
    pub id: String,
    #[serde(
        rename = "parent_msg_id",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub parent_id: String,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
    #[serde(
        rename = "resourceversion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    /// Always false on the WebSocket (viaduct forces it); kept for round-tripping.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sync: bool,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub msg_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
}

/// The largest frame either side of the cloud–edge channel accepts (an encoded [`Message`]).
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub header: Header,
    #[serde(default)]
    pub route: Route,
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error("message of {size} bytes exceeds the {limit}-byte frame limit")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message has no header.msg_id")]
    NoId,
}

impl Message {
    /// A new message with a fresh id and the current time.
    pub fn new(
        source: &str,
        group: &str,
        operation: &str,
        resource: &str,
        content: Value,
    ) -> Message {
        Message {
            header: Header {
                id: uuid::Uuid::new_v4().to_string(),
                timestamp: crate::clock::now_ms() as i64,
                ..Header::default()
            },
            route: Route {
                source: source.into(),
                group: group.into(),
                operation: operation.into(),
                resource: resource.into(),
                ..Route::default()
            },
            content,
        }
    }

    pub fn with_resource_version(mut self, rv: impl Into<String>) -> Message {
        self.header.resource_version = rv.into();
        self
    }

    /// A reply to `self` (`NewRespByMessage`): same source, group and resource, operation
    /// `response`, `parent_msg_id` = this message's id.
    pub fn response(&self, content: Value) -> Message {
        let mut m = Message::new(
            &self.route.source,
            &self.route.group,
            op::RESPONSE,
            &self.route.resource,
            content,
        );
        m.header.parent_id = self.header.id.clone();
        m.header.msg_type = self.header.msg_type.clone();
        m
    }

    /// The acknowledgement the edge sends once it has stored `self`.
    pub fn ack(&self) -> Message {
        self.response(Value::String(ACK_OK.into()))
    }

    /// An error reply (`NewErrorMessage`): operation `error`, content the text.
    pub fn error_reply(&self, text: &str) -> Message {
        let mut m = self.response(Value::String(text.into()));
        m.route.operation = op::ERROR.into();
        m
    }

    /// A keepalive as EdgeHub sends it every heartbeat.
    pub fn keepalive() -> Message {
        Message::new(
            "websocket",
            group::RESOURCE,
            op::KEEPALIVE,
            "node",
            Value::String("ping".into()),
        )
    }

    /// Decodes one frame, refusing frames over `limit` bytes before parsing them.
    pub fn decode(frame: &[u8], limit: usize) -> Result<Message, EnvelopeError> {
        if frame.len() > limit {
            return Err(EnvelopeError::TooLarge {
                size: frame.len(),
                limit,
            });
        }
        let m: Message =
            serde_json::from_slice(frame).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if m.header.id.is_empty() {
            return Err(EnvelopeError::NoId);
        }
        Ok(m)
    }

    /// Encodes as KubeEdge does (`json.Encoder`: compact JSON with a trailing newline).
    pub fn encode(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn decodes_kubeedge_wire_examples() {
        let wire = br#"{"header":{"msg_id":"6b1c","timestamp":1717000000000,"resourceversion":"48213"},
            "route":{"source":"edgecontroller","group":"resource","operation":"insert","resource":"default/pod/nginx"},
            "content":{"kind":"Pod"}}"#;
        let m = Message::decode(wire, 1 << 20).expect("decodes");
        assert_eq!(m.header.resource_version, "48213");
        assert_eq!(m.route.resource, "default/pod/nginx");
        assert_eq!(m.content["kind"], "Pod");
    }

    #[test]
    fn encodes_like_kubeedge() {
        let m = Message::new("websocket", "resource", "keepalive", "node", json!("ping"));
        let v: Value = serde_json::from_str(&m.encode()).expect("json");
        assert!(m.encode().ends_with('\n'));
        assert!(
            v["header"].get("parent_msg_id").is_none(),
            "empty strings are omitted"
        );
        assert!(v["header"].get("sync").is_none());
        assert!(
            v["header"]["timestamp"]
                .as_i64()
                .is_some_and(|t| t > 1_600_000_000_000)
        );
        assert_eq!(v["route"]["operation"], "keepalive");
    }

    #[test]
    fn acks_and_errors_point_at_their_request() {
        let req = Message::new(
            "edgecontroller",
            "resource",
            "update",
            "default/pod/p",
            json!({}),
        );
        let ack = req.ack();
        assert_eq!(
            (
                ack.header.parent_id.as_str(),
                ack.route.operation.as_str(),
                &ack.content
            ),
            (req.header.id.as_str(), "response", &json!("OK"))
        );
        assert_eq!(ack.route.resource, req.route.resource);
        let err = req.error_reply("disk full");
        assert_eq!(
            (err.route.operation.as_str(), &err.content),
            ("error", &json!("disk full"))
        );
    }

    #[test]
    fn bad_frames_are_explained() {
        assert!(matches!(
            Message::decode(b"{", 100),
            Err(EnvelopeError::Malformed(_))
        ));
        assert_eq!(
            Message::decode(&[b' '; 101], 100),
            Err(EnvelopeError::TooLarge {
                size: 101,
                limit: 100
            })
        );
        assert_eq!(
            Message::decode(br#"{"header":{}}"#, 100),
            Err(EnvelopeError::NoId)
        );
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes, 256);
        }

        #[test]
        fn encode_then_decode_is_identity(
            source in "[a-z]{0,10}", op in "[a-z_]{0,10}", resource in ".{0,40}",
            rv in "[0-9]{0,8}", parent in "[a-f0-9-]{0,36}", content in any_json(),
        ) {
            let mut m = Message::new(&source, "resource", &op, &resource, content);
            m.header.resource_version = rv;
            m.header.parent_id = parent;
            let back = Message::decode(m.encode().as_bytes(), usize::MAX).expect("decodes");
            prop_assert_eq!(back, m);
        }
    }
}
