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

/// An app's response headers as `HTTPResponse` keeps them: end-to-end ones only, under Go's
/// names, several values of one name together. Both servicebus directions use it.
pub fn header_map<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            let value = String::from_utf8_lossy(value).into_owned();
            out.entry(canonical(name)).or_default().push(value);
        }
    }
    out
}

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

/// What an edge app asks the edge's ServiceBus for (servicebus → rest), as KubeEdge's:
/// `{"method":"POST","targetURL":"<a rule's target_url>","payload":…}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRequest {
    #[serde(default)]
    pub method: String,
    #[serde(rename = "targetURL")]
    pub target_url: String,
    #[serde(default)]
    pub payload: serde_json::Value,
}

impl ServiceRequest {
    /// The method the cloud app is called with (`POST` when none is named).
    pub fn method(&self) -> &str {
        match self.method.trim() {
            "" => "POST",
            m => m,
        }
    }

    /// The body the cloud app gets: a string payload as its text, any other JSON as JSON,
    /// none as nothing.
    pub fn body(&self) -> Vec<u8> {
        match &self.payload {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        }
    }

    /// The request in an upload's content: kedge's edge sends it as JSON; a stock edgecore
    /// sends the app's raw bytes, which Go's JSON writes as a base64 string.
    pub fn from_content(content: &serde_json::Value) -> Result<ServiceRequest, String> {
        use base64::Engine;
        let parsed = match content {
            serde_json::Value::String(s) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .unwrap_or_else(|_| s.clone().into_bytes());
                serde_json::from_slice(&raw)
            }
            other => serde_json::from_value(other.clone()),
        };
        parsed.map_err(|e| {
            format!("not a servicebus request ({{\"method\",\"targetURL\",\"payload\"}}): {e}")
        })
    }
}

/// What the edge app gets back, as KubeEdge's: `{"code","msg","body"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAnswer {
    pub code: u16,
    pub msg: String,
    #[serde(default)]
    pub body: String,
}

impl ServiceAnswer {
    /// The cloud's answer to a servicebus upload: kedge's cloud sends an [`HttpResponse`], a
    /// stock cloudcore the cloud app's body as a string (it keeps no status: 200).
    pub fn from_cloud(content: &serde_json::Value) -> ServiceAnswer {
        let resp = match content {
            serde_json::Value::String(s) => HttpResponse {
                status_code: 200,
                body: s.clone().into_bytes(),
                ..HttpResponse::default()
            },
            other => serde_json::from_value(other.clone()).unwrap_or_else(|e| {
                HttpResponse::error(502, &format!("the cloud's answer is not understood: {e}"))
            }),
        };
        let msg = if resp.header.contains_key(EDGE_ERROR) {
            "the cloud could not call the target".to_string()
        } else {
            "receive response from cloud successfully".to_string()
        };
        ServiceAnswer {
            code: resp.status_code,
            msg,
            body: String::from_utf8_lossy(&resp.body).into_owned(),
        }
    }

    /// An answer the edge makes itself.
    pub fn error(code: u16, msg: impl Into<String>) -> ServiceAnswer {
        ServiceAnswer {
            code,
            msg: msg.into(),
            body: String::new(),
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

    #[test]
    fn a_servicebus_request_reads_from_kedge_and_stock_edges() {
        let app = br#"{"method":"PUT","targetURL":"http://127.0.0.1:9000/echo","payload":{"a":1}}"#;
        let as_json: serde_json::Value = serde_json::from_slice(app).expect("json");
        let kedge = ServiceRequest::from_content(&as_json).expect("kedge edge");
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(app);
        let stock =
            ServiceRequest::from_content(&serde_json::Value::String(b64)).expect("edgecore");
        assert_eq!(kedge, stock);
        assert_eq!(
            (kedge.method(), kedge.body()),
            ("PUT", br#"{"a":1}"#.to_vec())
        );
        let text = ServiceRequest {
            payload: "hello".into(),
            ..ServiceRequest::default()
        };
        assert_eq!((text.method(), text.body()), ("POST", b"hello".to_vec()));
        assert!(ServiceRequest::default().body().is_empty());
        let bad = ServiceRequest::from_content(&serde_json::json!({"method": "GET"}));
        assert!(bad.expect_err("no targetURL").contains("targetURL"));
    }

    #[test]
    fn the_cloud_answer_becomes_kubeedge_code_msg_body() {
        let kedge = HttpResponse {
            status_code: 201,
            body: b"made".to_vec(),
            ..HttpResponse::default()
        };
        let a = ServiceAnswer::from_cloud(&serde_json::to_value(&kedge).expect("json"));
        assert_eq!((a.code, a.body.as_str()), (201, "made"));
        assert_eq!(a.msg, "receive response from cloud successfully");
        let stock = ServiceAnswer::from_cloud(&serde_json::json!("Hello World"));
        assert_eq!((stock.code, stock.body.as_str()), (200, "Hello World"));
        let failed = HttpResponse::error(502, "unreachable");
        let f = ServiceAnswer::from_cloud(&serde_json::to_value(&failed).expect("json"));
        assert_eq!((f.code, f.body.as_str()), (502, "unreachable\n"));
        assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::json!({"code": 201, "msg": "receive response from cloud successfully", "body": "made"})
        );
    }

    #[test]
    fn response_headers_keep_end_to_end_ones_under_gos_names() {
        let h = header_map([
            ("content-type", b"text/plain".as_slice()),
            ("x-app", b"1".as_slice()),
            ("X-App", b"2".as_slice()),
            ("transfer-encoding", b"chunked".as_slice()),
            ("Connection", b"close".as_slice()),
        ]);
        assert_eq!(
            h,
            BTreeMap::from([
                ("Content-Type".into(), vec!["text/plain".into()]),
                ("X-App".into(), vec!["1".into(), "2".into()]),
            ])
        );
    }
}
