//! servicebus → rest. An app on an edge asks the edge's ServiceBus (`127.0.0.1:9060`) for a
//! rule's `target_url`; the edge uploads the request (source `servicebus`, op `upload`, group
//! `user`, resource the `target_url`), and the cloud calls the rule's rest target with the
//! request's method and payload, header `NodeName`, and answers the upload with what the target
//! said: an `HttpResponse` (status, headers, body) to kedge's edge, the body as a string to a
//! stock edgecore (which answers its app with code 200 whatever the status; KubeEdge's cloud
//! sends only the body). Nothing is retried: the app is waiting, and gets each failure as it is
//! (404 no rule, 502 target unreachable, 504 no answer in time).

use std::sync::Arc;

use kedge_core::dialect::Dialect;
use kedge_core::envelope::Message;
use kedge_core::servicebus::{HttpResponse, ServiceRequest, header_map};

use super::Rules;
use crate::cloudhub::hub::Hub;

/// The most of a target's answer passed back (KubeEdge's edge reads up to 5 MB).
const MAX_ANSWER: usize = 5_000_000;

/// The upload's source for a servicebus → rest request.
pub const SOURCE: &str = "servicebus";

impl Rules {
    /// A servicebus → rest request from `node`: the target is called and `m` answered.
    pub fn service_call(self: &Arc<Self>, hub: &Arc<Hub>, node: &str, m: Message) {
        let (rules, hub, node) = (self.clone(), hub.clone(), node.to_string());
        tokio::spawn(async move {
            let resp = rules.call_target(&node, &m).await;
            let content = match hub.dialect(&node) {
                Some(Dialect::KubeEdge) => {
                    serde_json::Value::String(String::from_utf8_lossy(&resp.body).into_owned())
                }
                _ => serde_json::to_value(&resp).unwrap_or_default(),
            };
            let _ = hub.send(&node, m.response(content)).await;
        });
    }

    async fn call_target(&self, node: &str, m: &Message) -> HttpResponse {
        if !self.loaded(std::time::Duration::from_secs(10)).await {
            return HttpResponse::error(503, "the cloud's rules are not loaded yet; try again");
        }
        let target_url = m.route.resource.as_str();
        let Some(route) = self.table().service(node, target_url).cloned() else {
            let why = format!("no servicebus rule for target_url {target_url} on node {node}");
            tracing::info!(node, "{why}");
            return HttpResponse::error(404, &why);
        };
        let req = match ServiceRequest::from_content(&m.content) {
            Ok(r) => r,
            Err(why) => {
                self.stats.failure(&route.rule, &why);
                return HttpResponse::error(400, &why);
            }
        };
        let Ok(method) = reqwest::Method::from_bytes(req.method().as_bytes()) else {
            let why = format!("{:?} is not an HTTP method", req.method());
            self.stats.failure(&route.rule, &why);
            return HttpResponse::error(400, &why);
        };
        let sent = self
            .http
            .request(method, &route.url)
            .header("NodeName", node)
            .body(req.body())
            .send()
            .await;
        match read(sent).await {
            Ok(resp) => {
                self.stats.success(&route.rule);
                resp
            }
            Err((code, why)) => {
                let why = format!("{}: {why}", route.url);
                tracing::warn!(rule = %route.rule, "{why}");
                self.stats.failure(&route.rule, &why);
                HttpResponse::error(code, &why)
            }
        }
    }
}

/// The target's answer, or the status and reason it failed with.
async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<HttpResponse, (u16, String)> {
    let fail = |e: reqwest::Error| {
        let code = if e.is_timeout() { 504 } else { 502 };
        (code, e.to_string())
    };
    let mut r = sent.map_err(fail)?;
    let status_code = r.status().as_u16();
    let header = header_map(r.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err((502, format!("answered more than {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status_code,
        header,
        body,
    })
}
