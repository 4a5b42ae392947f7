//! rest → servicebus messages, as KubeEdge's: the request goes to the node with the HTTP method
//! as operation, resource `<service_port>:<path>[?query]`, and content
//! `{"method","url","header":{name:[values]},"body":"<base64>"}`; the edge's answer carries
//! `{"status_code","header","body":"<base64>"}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A header name as Go writes it (`textproto.CanonicalMIMEHeaderKey`: `user-agent` →
/// `User-Agent`). KubeEdge's edge and cloud keep Go's `http.Header`, whose lookups and whose own
/// headers use this form: a name sent otherwise arrives beside Go's, duplicated. A name with a
/// character Go would not canonicalise is kept as it is, as Go does.
pub fn canonical(name: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.chars().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Headers that belong to one hop and are not forwarded.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
];

/// Marks a response the edge made itself (not the app's), so the router counts a failure.
pub const EDGE_ERROR: &str = "x-kedge-edge-error";

/// Whether `op` is an HTTP method (the operation of a servicebus request).
pub fn is_method(op: &str) -> bool {
    matches!(
        op,
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS"
    )
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(default, with = "b64")]
    pub body: Vec<u8>,
    /// kedge: how long the app may take, in ms (the router's timeout less a margin for the way
    /// back), so the edge answers 504 before the caller gives up. Absent from KubeEdge's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(default, with = "b64")]
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response the edge makes itself (the app could not be reached, or did not answer).
    pub fn error(status_code: u16, why: &str) -> HttpResponse {
        HttpResponse {
            status_code,
            header: BTreeMap::from([
                ("content-type".into(), vec!["text/plain".into()]),
                (EDGE_ERROR.into(), vec!["true".into()]),
            ]),
            body: format!("{why}\n").into_bytes(),
        }
    }
}

/// `<port>:<path>` → (port, path), the path starting with `/`.
pub fn parse_resource(resource: &str) -> Option<(u16, &str)> {
    let (port, path) = resource.split_once(':')?;
    let port = port.parse().ok().filter(|p: &u16| *p > 0)?;
    path.starts_with('/').then_some((port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_written_as_go_does() {
        assert_eq!(canonical("user-agent"), "User-Agent");
        assert_eq!(canonical("ACCEPT"), "Accept");
        assert_eq!(canonical("x-request-id"), "X-Request-Id");
        assert_eq!(canonical("content-md5"), "Content-Md5");
        assert_eq!(canonical("bad name"), "bad name");
    }

    #[test]
    fn requests_round_trip_with_base64_bodies() {
        let r = HttpRequest {
            method: "POST".into(),
            url: String::new(),
            header: BTreeMap::from([("x-test".into(), vec!["1".into()])]),
            body: vec![0, 159, 146, 150],
            timeout_ms: None,
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["body"], "AJ+Slg==");
        assert_eq!(serde_json::from_value::<HttpRequest>(v).expect("back"), r);
        assert_eq!(
            parse_resource("6666:/target/x?y=1"),
            Some((6666, "/target/x?y=1"))
        );
        assert_eq!(parse_resource("0:/x"), None);
        assert_eq!(parse_resource("6666:x"), None);
        assert_eq!(parse_resource("/x"), None);
        assert!(is_method("DELETE") && !is_method("publish"));
    }
}
