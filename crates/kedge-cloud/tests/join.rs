//! Joining over real TLS: the embedded API, the join server, and the edge's join client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kedge_edge::edgehub::certificate::{Join, JoinError, join, load_or_join, renew};
use kedge_pki::Ca;
use kedge_pki::token::TokenError;
use kube::api::{Api, PostParams};

struct Cloud {
    api: common::Api,
    join: kedge_http::Listener,
    ca: Arc<Ca>,
}

async fn cloud() -> Cloud {
    let api = common::api().await;
    let (ca, join) = common::join_server(&api).await;
    Cloud { api, join, ca }
}

impl Cloud {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.join.addr.port())
    }
}

/// `GET /edge.crt` as node `node` with a fresh token and `csr` as the body.
async fn ask_certificate(c: &Cloud, node: &str, csr: Vec<u8>) -> reqwest::Response {
    let token = c.ca.token(Duration::from_secs(60)).expect("token");
    let jwt = token.split_once('.').expect("hash.jwt").1.to_string();
    let tls = kedge_pki::node::client_config(c.ca.cert_der(), None).expect("tls");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client");
    http.get(format!("{}/edge.crt", c.url()))
        .header("NodeName", node)
        .header("Authorization", format!("Bearer {jwt}"))
        .body(csr)
        .send()
        .await
        .expect("request")
}

async fn try_join(
    c: &Cloud,
    node: &str,
    token: &str,
    dir: &std::path::Path,
) -> Result<String, JoinError> {
    let server = c.url();
    let j = Join {
        server: &server,
        node,
        token,
        dir,
    };
    join(&j).await.map(|id| id.node().unwrap_or_default())
}

#[tokio::test]
async fn a_node_joins_with_a_token_and_keeps_its_identity() {
    let c = cloud().await;
    let edge = tempfile::tempdir().expect("edge dir");
    let token = c.ca.token(Duration::from_secs(600)).expect("token");
    assert_eq!(
        try_join(&c, "edge-1", &token, edge.path())
            .await
            .expect("joins"),
        "edge-1"
    );
    // The stored identity is reused: this works even with a token that would now be refused.
    let server = c.url();
    let again = Join {
        server: &server,
        node: "edge-1",
        token: "not-a-token",
        dir: edge.path(),
    };
    let id = load_or_join(&again)
        .await
        .expect("reuses the stored identity");
    assert_eq!(id.node().as_deref(), Some("edge-1"));
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_clear_errors() {
    let c = cloud().await;
    let edge = tempfile::tempdir().expect("edge dir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expired =
        c.ca.token_at(Duration::from_secs(60), now - 3600)
            .expect("token");
    match try_join(&c, "edge-1", &expired, edge.path()).await {
        Err(JoinError::Refused {
            status: 401,
            reason,
            ..
        }) => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("expired token: {other:?}"),
    }
    // Signed by another CA but carrying this cloud's CA hash: a forgery.
    let other_dir = tempfile::tempdir().expect("dir");
    let other = Ca::load_or_create(other_dir.path()).expect("other ca");
    let foreign = other.token(Duration::from_secs(60)).expect("token");
    let jwt = foreign.split_once('.').expect("hash.jwt").1;
    let forged = format!("{}.{jwt}", c.ca.fingerprint());
    match try_join(&c, "edge-1", &forged, edge.path()).await {
        Err(JoinError::Refused {
            status: 401,
            reason,
            ..
        }) => {
            assert!(reason.contains("not issued by this cloud"), "{reason}")
        }
        other => panic!("forged token: {other:?}"),
    }
    // Another cloud's token: the downloaded CA does not match its hash, so nothing is sent.
    match try_join(&c, "edge-1", &foreign, edge.path()).await {
        Err(JoinError::Token(TokenError::CaMismatch)) => {}
        other => panic!("wrong CA hash: {other:?}"),
    }
    assert!(matches!(
        try_join(&c, "edge-1", "garbage", edge.path()).await,
        Err(JoinError::Token(TokenError::Malformed))
    ));
    assert!(
        kedge_pki::node::Identity::load(edge.path())
            .expect("load")
            .is_none(),
        "nothing stored"
    );
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_csr_for_another_node_is_refused() {
    let c = cloud().await;
    let (_key, csr) = kedge_pki::node::node_csr("edge-2").expect("csr");
    let resp = ask_certificate(&c, "edge-1", csr).await;
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.expect("body");
    assert!(text.contains("system:node:edge-1"), "{text}");
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn node_lookup_answers_as_kubeedge() {
    let c = cloud().await;
    let nodes: Api<Node> = Api::all(c.api.client.clone());
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "edge-9"}})).expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let tls = kedge_pki::node::client_config(c.ca.cert_der(), None).expect("tls");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client");
    let found = http
        .get(format!("{}/node/edge-9", c.url()))
        .send()
        .await
        .expect("request");
    assert_eq!(
        (
            found.status().as_u16(),
            found.text().await.expect("body").as_str()
        ),
        (200, "Node found")
    );
    let missing = http
        .get(format!("{}/node/edge-0", c.url()))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status().as_u16(), 404);
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_node_renews_with_its_certificate_and_only_for_itself() {
    let c = cloud().await;
    let server = c.url();
    let dir = tempfile::tempdir().expect("edge dir");
    let token = c.ca.token(Duration::from_secs(600)).expect("token");
    let j = Join {
        server: &server,
        node: "edge-1",
        token: &token,
        dir: dir.path(),
    };
    let first = join(&j).await.expect("joins");
    // Renewal needs no token: the current certificate authenticates it.
    let no_token = Join { token: "", ..j };
    let renewed = renew(&no_token, &first).await.expect("renews");
    assert_ne!(renewed.cert_der, first.cert_der, "a new certificate");
    assert_eq!(renewed.node().as_deref(), Some("edge-1"));
    let stored = kedge_pki::node::Identity::load(dir.path())
        .expect("load")
        .expect("stored");
    assert_eq!(stored.cert_der, renewed.cert_der, "the new one is stored");
    // edge-1's certificate cannot obtain one for edge-2.
    let other = tempfile::tempdir().expect("other dir");
    let as_edge2 = Join {
        server: &server,
        node: "edge-2",
        token: "",
        dir: other.path(),
    };
    match renew(&as_edge2, &renewed).await {
        Err(JoinError::Refused { status, reason, .. }) => {
            assert_eq!(status, 403);
            assert!(reason.contains("\"edge-1\""), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_csr_is_refused() {
    let c = cloud().await;
    let resp = ask_certificate(&c, "edge-1", vec![b'x'; 2 << 20]).await;
    assert_eq!(resp.status().as_u16(), 413);
    c.api.server.shutdown().await;
}
