//! Device twins as KubeEdge's DeviceTwin keeps them (`dttype.MsgTwin`): per property an
//! `expected` value (desired, from the cloud) and an `actual` value (reported, from the device),
//! each with a version, the property's type and whether it is optional. Payload shapes follow
//! the MQTT topics of `$hw/events/device/<namespace>/<name>/twin/...`.
//!
//! - [`value`]: values checked against the DeviceModel property type;
//! - [`merge`]: the edge's state changes (device update, cloud desired) and the messages they
//!   produce (result, document, delta, report);
//! - [`report`]: the cloud applying an edge report to `status.twins`;
//! - [`topic`]: the MQTT topics; [`device`]: what is read from Device and DeviceModel objects.

pub mod device;
pub mod merge;
pub mod report;
pub mod topic;
pub mod value;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Largest twin value accepted (KubeEdge: 512 bytes, no spaces).
pub const MAX_VALUE_LEN: usize = 64 << 10;

/// Why a twin message is refused, with the code of the `.../result` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    #[error("{0}")]
    BadRequest(String),
    #[error("device {0} is not on this node")]
    UnknownDevice(String),
    #[error("{0}")]
    TooLarge(String),
    /// The edge could not store it (disk full, stopping): nothing was taken, try again.
    #[error("not stored: {0}")]
    NotStored(String),
}

impl TwinError {
    /// The `code` of the error result (HTTP-like, as KubeEdge's).
    pub fn code(&self) -> u16 {
        match self {
            TwinError::BadRequest(_) => 400,
            TwinError::UnknownDevice(_) => 404,
            TwinError::TooLarge(_) => 413,
            TwinError::NotStored(_) => 503,
        }
    }
}

/// A value with its timestamp (ms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinValue {
    #[serde(
        default,
        deserialize_with = "loose_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ValueMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMetadata {
    #[serde(default)]
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeMetadata {
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// `{cloud, edge}` counters of one side of a twin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinVersion {
    #[serde(default)]
    pub cloud: i64,
    #[serde(default)]
    pub edge: i64,
}

/// One twin as it travels in payloads (`dttype.MsgTwin`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgTwin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<TwinValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<TwinValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TypeMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<TwinVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<TwinVersion>,
}

/// A twin as the edge stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Twin {
    pub expected: Option<TwinValue>,
    pub actual: Option<TwinValue>,
    pub optional: bool,
    /// The property type (`string`, `int`, …).
    pub kind: String,
    pub expected_version: TwinVersion,
    pub actual_version: TwinVersion,
}

impl Twin {
    /// As it appears in payloads to apps and devices (versions stripped, as KubeEdge does).
    pub fn to_msg(&self) -> MsgTwin {
        MsgTwin {
            expected: self.expected.clone(),
            actual: self.actual.clone(),
            optional: Some(self.optional),
            metadata: Some(TypeMetadata {
                kind: self.kind.clone(),
            }),
            expected_version: None,
            actual_version: None,
        }
    }

    pub fn expected_value(&self) -> Option<&str> {
        self.expected.as_ref()?.value.as_deref()
    }

    pub fn actual_value(&self) -> Option<&str> {
        self.actual.as_ref()?.value.as_deref()
    }
}

/// A device's twins by property name.
pub type Twins = BTreeMap<String, Twin>;

/// `$hw/events/device/<id>/twin/update` (`twin` values of `null` delete optional twins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TwinUpdate {
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default)]
    pub twin: BTreeMap<String, Option<MsgTwin>>,
}

/// Just the event id of a payload, to answer even what cannot be parsed further.
#[derive(Debug, Default, Deserialize)]
struct EventId {
    #[serde(default, deserialize_with = "loose_string")]
    event_id: Option<String>,
}

/// The `event_id` of a payload, when it has one; found even in malformed JSON when it is a plain
/// string, so the error result still names the request it answers.
pub fn event_id_of(payload: &[u8]) -> String {
    match serde_json::from_slice::<EventId>(payload) {
        Ok(e) => e.event_id.unwrap_or_default(),
        Err(_) => scan_event_id(&String::from_utf8_lossy(payload)).unwrap_or_default(),
    }
}

/// `"event_id" : "<no quotes or backslashes>"` anywhere in `text`.
fn scan_event_id(text: &str) -> Option<String> {
    let after = &text[text.find("\"event_id\"")? + 10..];
    let value = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = value.find(['"', '\\'])?;
    value[end..]
        .starts_with('"')
        .then(|| value[..end].to_string())
}

/// Parses a twin update; a payload that is not one is a 400.
pub fn parse_update(payload: &[u8]) -> Result<TwinUpdate, TwinError> {
    serde_json::from_slice(payload)
        .map_err(|e| TwinError::BadRequest(format!("the payload is not a twin update: {e}")))
}

/// Accepts a JSON string, number or boolean as a string (devices often send `5` for `"5"`).
fn loose_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde_json::Value;
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "a twin value is a string, number or boolean, not {other}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_report_parses() {
        let p = br#"{"event_id":"1","timestamp":0,"twin":{"status":{"actual":{"value":"5"}}}}"#;
        let u = parse_update(p).expect("parses");
        let t = u.twin["status"].as_ref().expect("twin");
        assert_eq!(
            t.actual.as_ref().and_then(|a| a.value.as_deref()),
            Some("5")
        );
        assert_eq!(u.event_id, "1");
    }

    #[test]
    fn numbers_and_booleans_are_taken_as_strings_and_null_twins_mean_delete() {
        let u = parse_update(br#"{"twin":{"t":{"actual":{"value":21.5}},"on":{"actual":{"value":true}},"gone":null}}"#)
            .expect("parses");
        let v = |k: &str| {
            u.twin[k]
                .as_ref()
                .and_then(|t| t.actual.clone())
                .and_then(|a| a.value)
        };
        assert_eq!(v("t").as_deref(), Some("21.5"));
        assert_eq!(v("on").as_deref(), Some("true"));
        assert_eq!(u.twin["gone"], None);
    }

    #[test]
    fn what_is_not_a_twin_update_is_a_400_but_keeps_its_event_id() {
        for bad in [
            &b"not json"[..],
            br#"{"twin":[1]}"#,
            br#"{"twin":{"a":{"actual":{"value":[1]}}}}"#,
        ] {
            let e = parse_update(bad).expect_err("refused");
            assert_eq!(e.code(), 400, "{e}");
        }
        assert_eq!(event_id_of(br#"{"event_id":"e1","twin":[1]}"#), "e1");
        assert_eq!(event_id_of(b"junk"), "");
        assert_eq!(event_id_of(br#"{"event_id": "bad","twin":"#), "bad");
        assert_eq!(event_id_of(br#"{"event_id":"a\"b","#), "");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Whatever a device publishes: parsed or a 400, never a panic.
            #[test]
            fn any_payload_is_parsed_or_refused(p in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let Err(e) = parse_update(&p) {
                    prop_assert_eq!(e.code(), 400);
                }
                let _ = event_id_of(&p);
            }

            /// Any JSON document, twin-shaped or not.
            #[test]
            fn any_json_is_parsed_or_refused(v in crate::rule::tests::arbitrary_json()) {
                let bytes = serde_json::to_vec(&serde_json::json!({"event_id": "e", "twin": v}))
                    .expect("json");
                if let Err(e) = parse_update(&bytes) {
                    prop_assert_eq!(e.code(), 400);
                }
                prop_assert_eq!(event_id_of(&bytes), "e");
            }
        }
    }
}
