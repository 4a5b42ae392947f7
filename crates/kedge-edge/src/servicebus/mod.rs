//! ServiceBus: a rest→servicebus request from the cloud (operation = the HTTP method, resource
//! `<port>:<path>`) is made to `http://127.0.0.1:<port><path>` with the caller's headers and body;
//! the app's status, headers and body go back as the answer. An app that cannot be reached is a
//! 502, one that does not answer in time a 504 (KubeEdge lets both become a timeout).
//! The other way, servicebus → rest, edge apps call cloud apps through `server`.

pub mod server;

use std::time::Duration;

use kedge_core::envelope::{Message, group, op};
use kedge_core::servicebus::{HOP_BY_HOP, HttpRequest, HttpResponse, header_map, parse_resource};

/// How long a local app has to answer when the cloud does not say.
pub const TIMEOUT: Duration = Duration::from_secs(25);

/// ServiceBus's loop over the calls EdgeHub routes to it. Calls run concurrently: a slow app
/// holds up no other call.
pub async fn run(
    mut calls: tokio::sync::mpsc::Receiver<Message>,
    hub: crate::edgehub::client::EdgeHub,
) {
    let http = client();
    while let Some(m) = calls.recv().await {
        let (http, hub) = (http.clone(), hub.clone());
        tokio::spawn(async move { hub.send(call(&http, &m).await).await });
    }
}

/// Makes the call `m` describes and returns the answer for the cloud.
pub async fn call(http: &reqwest::Client, m: &Message) -> Message {
    let resp = match request(http, m).await {
        Ok(r) => r,
        Err(r) => r,
    };
    let content = serde_json::to_value(&resp).unwrap_or_default();
    // KubeEdge's shape, `upload` with the request as parent: cloudcore takes a `response` as an
    // acknowledgement and would wait for the answer until its timeout; kedge's cloud matches
    // either by the parent id.
    let mut answer = Message::new("servicebus", group::USER, op::UPLOAD, "", content);
    answer.header.parent_id = m.header.id.clone();
    answer
}

async fn request(http: &reqwest::Client, m: &Message) -> Result<HttpResponse, HttpResponse> {
    let Some((port, path)) = parse_resource(&m.route.resource) else {
        return Err(HttpResponse::error(
            400,
            &format!(
                "servicebus resource {:?} is not <port>:<path>",
                m.route.resource
            ),
        ));
    };
    let req: HttpRequest = serde_json::from_value(m.content.clone())
        .map_err(|e| HttpResponse::error(400, &format!("servicebus request: {e}")))?;
    let method = reqwest::Method::from_bytes(m.route.operation.as_bytes()).map_err(|_| {
        HttpResponse::error(
            400,
            &format!("{:?} is not an HTTP method", m.route.operation),
        )
    })?;
    let url = format!("http://127.0.0.1:{port}{path}");
    let timeout = req.timeout_ms.map_or(TIMEOUT, Duration::from_millis);
    let mut builder = http.request(method, &url).timeout(timeout);
    for (name, values) in &req.header {
        if HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        for v in values {
            builder = builder.header(name.as_str(), v.as_str());
        }
    }
    let resp = builder.body(req.body).send().await.map_err(|e| {
        if e.is_timeout() {
            HttpResponse::error(
                504,
                &format!("the app at {url} did not answer within {timeout:?}"),
            )
        } else {
            HttpResponse::error(502, &format!("the app at {url} cannot be reached: {e}"))
        }
    })?;
    let status_code = resp.status().as_u16();
    let header = header_map(
        resp.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let body = resp
        .bytes()
        .await
        .map_err(|e| HttpResponse::error(502, &format!("reading the app's answer: {e}")))?
        .to_vec();
    Ok(HttpResponse {
        status_code,
        header,
        body,
    })
}

/// The client for local apps (plain HTTP on loopback).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer goes as KubeEdge's edge sends it: op `upload` from `servicebus`, group `user`,
    /// the request as parent (cloudcore takes a `response` for an acknowledgement and waits on).
    #[tokio::test]
    async fn the_answer_is_an_upload_with_the_request_as_parent() {
        // As `main` does: reqwest is built without a provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let req = Message::new(
            "router_servicebus",
            group::USER,
            "GET",
            "no-port-here",
            serde_json::json!({}),
        );
        let answer = call(&client(), &req).await;
        assert_eq!(
            (
                answer.route.source.as_str(),
                answer.route.group.as_str(),
                answer.route.operation.as_str(),
                answer.route.resource.as_str(),
            ),
            ("servicebus", group::USER, op::UPLOAD, "")
        );
        assert_eq!(answer.header.parent_id, req.header.id);
        let resp: HttpResponse = serde_json::from_value(answer.content).expect("HTTPResponse");
        assert_eq!(resp.status_code, 400);
    }
}
