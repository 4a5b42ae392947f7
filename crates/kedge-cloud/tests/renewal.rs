//! A running edge renews its certificate before it expires, after its join token has expired,
//! and reconnects with it; the node stays connected throughout.

mod common;

use std::time::Duration;

use kedge_pki::node::{Identity, cert_validity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_edge_renews_its_certificate_without_the_token() {
    let api = common::api().await;
    let mut cfg = common::cloud_config(api.dir.path());
    cfg.node_cert_ttl = Duration::from_secs(10);
    let cloud = kedge_cloud::start(cfg, api.client.clone())
        .await
        .expect("cloud");
    let token = cloud.ca.token(Duration::from_secs(2)).expect("token");
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut ecfg = kedge_edge::EdgeConfig::new(edge_dir.path(), "edge-1", "127.0.0.1", &token);
    ecfg.hub_port = cloud.hub_addr.port();
    ecfg.https_port = cloud.join_addr.port();
    let edge = kedge_edge::start(ecfg).await.expect("edge");
    let pki = edge_dir.path().join("pki");
    let first = Identity::load(&pki).expect("load").expect("joined");
    let (_, first_expiry) = cert_validity(&first.cert_der).expect("validity");
    let mut connected = edge.hub.connected();
    common::wait_for("the first session", 10, async || {
        *connected.borrow_and_update()
    })
    .await;
    let sessions = cloud.hub.sessions_total();

    common::wait_for("a renewed certificate on disk", 20, async || {
        Identity::load(&pki)
            .ok()
            .flatten()
            .is_some_and(|id| id.cert_der != first.cert_der)
    })
    .await;
    let renewed = Identity::load(&pki).expect("load").expect("renewed");
    let (_, expiry) = cert_validity(&renewed.cert_der).expect("validity");
    assert!(
        expiry > first_expiry,
        "the new certificate outlives the old"
    );
    assert!(
        cloud
            .ca
            .verify_jwt(token.split_once('.').expect("token").1)
            .is_err(),
        "the join token had expired: renewal used the certificate"
    );
    assert!(
        jiff::Timestamp::now().as_second() < first_expiry,
        "renewed before the old certificate expired"
    );
    common::wait_for("a session with the new certificate", 10, async || {
        cloud.hub.sessions_total() > sessions && cloud.hub.connected() == ["edge-1"]
    })
    .await;
    cloud.shutdown().await;
    api.server.shutdown().await;
}
