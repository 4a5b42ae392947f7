//! CloudHub ⇄ EdgeHub over real WebSockets with mutual TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kedge_cloud::cloudhub::hub::{self, Hub, HubConfig, HubEvent};
use kedge_core::envelope::Message;
use kedge_edge::edgehub::certificate::{Join, join};
use kedge_edge::edgehub::client;
use kedge_pki::Ca;
use kedge_pki::node::Identity;
use serde_json::json;
use tokio::sync::mpsc;

struct Cloud {
    api: common::Api,
    join: kedge_http::Listener,
    hub_addr: std::net::SocketAddr,
    _hub_listener: kedge_http::Listener,
    hub: Arc<Hub>,
    events: mpsc::Receiver<HubEvent>,
    ca: Arc<Ca>,
}

async fn cloud(cfg: HubConfig) -> Cloud {
    let api = common::api().await;
    let (ca, join) = common::join_server(&api).await;
    let (tx, events) = mpsc::channel(64);
    let hub = Hub::new(cfg, tx);
    let any = "127.0.0.1:0".parse().expect("addr");
    let listener = hub::start(any, hub.clone(), &ca, &common::names())
        .await
        .expect("hub");
    let hub_addr = listener.addr;
    Cloud {
        api,
        join,
        hub_addr,
        _hub_listener: listener,
        hub,
        events,
        ca,
    }
}

async fn identity(c: &Cloud, node: &str, dir: &std::path::Path) -> Identity {
    let token = c.ca.token(Duration::from_secs(60)).expect("token");
    let server = format!("https://127.0.0.1:{}", c.join.addr.port());
    join(&Join {
        server: &server,
        node,
        token: &token,
        dir,
    })
    .await
    .expect("join")
}

/// EdgeHub for `node` with a fresh identity, keepalives every `heartbeat`; waits until the hub
/// reports it connected. Returns it, its downstream messages, and its data dir.
async fn edge(
    c: &mut Cloud,
    node: &str,
    heartbeat: Duration,
) -> (client::EdgeHub, mpsc::Receiver<Message>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("edge");
    let id = identity(c, node, dir.path()).await;
    let mut hcfg = client::HubConfig::new(c.hub_addr.to_string(), node);
    hcfg.heartbeat = heartbeat;
    let (down_tx, down) = mpsc::channel(16);
    let eh = client::spawn(hcfg, id, down_tx).expect("edgehub");
    assert!(matches!(next_event(&mut c.events).await, HubEvent::Connected(n) if n == node));
    (eh, down, dir)
}

async fn next_event(events: &mut mpsc::Receiver<HubEvent>) -> HubEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

#[tokio::test]
async fn messages_flow_both_ways_and_keepalives_hold_the_session() {
    let cfg = HubConfig {
        keepalive_timeout: Duration::from_millis(600),
        ..HubConfig::default()
    };
    let mut c = cloud(cfg).await;
    let (eh, mut down, _dir) = edge(&mut c, "edge-1", Duration::from_millis(100)).await;
    assert_eq!(c.hub.connected(), ["edge-1"]);

    let up = Message::new(
        "edged",
        "resource",
        "update",
        "default/podstatus/p",
        json!({"phase": "Running"}),
    );
    assert!(eh.send(up.clone()).await);
    match next_event(&mut c.events).await {
        HubEvent::Message(node, m) => assert_eq!((node.as_str(), *m), ("edge-1", up)),
        other => panic!("unexpected {other:?}"),
    }
    let downmsg = Message::new(
        "edgecontroller",
        "resource",
        "insert",
        "default/configmap/c",
        json!({"data": {}}),
    );
    c.hub
        .send("edge-1", downmsg.clone())
        .await
        .expect("node connected");
    let got = tokio::time::timeout(Duration::from_secs(5), down.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got, downmsg);

    // Keepalives every 100 ms keep a 600 ms session alive well past its timeout.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), c.events.recv()).await;
    assert!(
        quiet.is_err(),
        "no disconnect while keepalives flow: {quiet:?}"
    );
    assert_eq!(c.hub.connected(), ["edge-1"]);
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_silent_edge_is_dropped_and_reconnects() {
    let cfg = HubConfig {
        keepalive_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    };
    let mut c = cloud(cfg).await;
    let _edge = edge(&mut c, "edge-1", Duration::from_secs(3600)).await;
    assert!(matches!(next_event(&mut c.events).await, HubEvent::Disconnected(n) if n == "edge-1"));
    // EdgeHub reconnects at once (back-off starts at 100 ms), not after KubeEdge's 30 s.
    assert!(matches!(
        next_event(&mut c.events).await,
        HubEvent::Connected(_)
    ));
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_node_is_refused() {
    let mut c = cloud(HubConfig::default()).await;
    let edge = tempfile::tempdir().expect("edge");
    let id = identity(&c, "edge-1", edge.path()).await;
    // edge-1's certificate, claiming to be edge-2.
    let hcfg = client::HubConfig::new(c.hub_addr.to_string(), "edge-2");
    let (down_tx, _down) = mpsc::channel(16);
    let eh = client::spawn(hcfg, id, down_tx).expect("edgehub");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.hub.refused() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub refuses the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.hub.connected().is_empty());
    assert!(!*eh.connected().borrow());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.events.recv())
            .await
            .is_err()
    );
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_flooding_node_is_slowed_to_its_rate_and_loses_nothing() {
    let cfg = HubConfig {
        node_rate: 50,
        node_burst: 10,
        ..HubConfig::default()
    };
    let mut c = cloud(cfg).await;
    let (eh, _down, _dir) = edge(&mut c, "edge-1", Duration::from_secs(3600)).await;
    let started = tokio::time::Instant::now();
    for i in 0..60 {
        let m = Message::new(
            "edged",
            "resource",
            "update",
            "default/podstatus/p",
            json!(i),
        );
        assert!(eh.send(m).await);
    }
    for i in 0..60 {
        match next_event(&mut c.events).await {
            HubEvent::Message(_, m) => assert_eq!(m.content, json!(i), "in order, none lost"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // 10 pass at once; the other 50 at 50/s take at least a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "throttled: {took:?}");
    assert!(c.hub.throttled() >= 49, "counted: {}", c.hub.throttled());
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_when_its_certificate_expires() {
    let mut c = cloud(HubConfig::default()).await;
    let (key, csr) = kedge_pki::node::node_csr("edge-1").expect("csr");
    let cert =
        c.ca.sign_node_csr(&csr, "edge-1", Duration::from_secs(3))
            .expect("short-lived certificate");
    let id = Identity::new(c.ca.cert_der().to_vec(), cert.to_vec(), key);
    let (down_tx, _down) = mpsc::channel(16);
    let hcfg = client::HubConfig::new(c.hub_addr.to_string(), "edge-1");
    let _eh = client::spawn(hcfg, id, down_tx).expect("edgehub");
    assert!(matches!(
        next_event(&mut c.events).await,
        HubEvent::Connected(_)
    ));
    let connected_at = tokio::time::Instant::now();
    assert!(matches!(next_event(&mut c.events).await, HubEvent::Disconnected(n) if n == "edge-1"));
    assert!(
        connected_at.elapsed() < Duration::from_secs(5),
        "closed at expiry, not at the 30 s keepalive timeout"
    );
    // Reconnecting with the expired certificate fails the TLS handshake.
    let after = tokio::time::timeout(Duration::from_millis(1500), c.events.recv()).await;
    assert!(
        after.is_err(),
        "no new session with an expired certificate: {after:?}"
    );
    c.api.server.shutdown().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_ends_only_that_session() {
    let cfg = HubConfig {
        max_frame: 64 << 10,
        ..HubConfig::default()
    };
    let mut c = cloud(cfg).await;
    let (eh, _down, _dir) = edge(&mut c, "edge-1", Duration::from_secs(3600)).await;
    let (other, _down2, _dir2) = edge(&mut c, "edge-2", Duration::from_secs(3600)).await;
    let big = Message::new(
        "edged",
        "resource",
        "update",
        "default/podstatus/p",
        json!("x".repeat(100 << 10)),
    );
    let _ = eh.send(big).await;
    assert!(matches!(next_event(&mut c.events).await, HubEvent::Disconnected(n) if n == "edge-1"));
    // The other node's session is untouched and the first one comes back.
    let small = Message::new(
        "edged",
        "resource",
        "update",
        "default/podstatus/q",
        json!(1),
    );
    assert!(other.send(small).await);
    let mut reconnected = false;
    let mut got_small = false;
    while !(reconnected && got_small) {
        match next_event(&mut c.events).await {
            HubEvent::Connected(n) if n == "edge-1" => reconnected = true,
            HubEvent::Message(n, m) if n == "edge-2" => got_small = m.content == json!(1),
            other => panic!("unexpected {other:?}"),
        }
    }
    c.api.server.shutdown().await;
}
