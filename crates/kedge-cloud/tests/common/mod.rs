//! Shared fixture: a real embedded API server and a kube-rs client for it.
#![allow(dead_code)]

use std::path::Path;

pub struct Api {
    pub dir: tempfile::TempDir,
    pub server: kedge_apiserver::ApiServer,
    pub client: kube::Client,
}

/// Starts the embedded API on a free port in a fresh data directory.
pub async fn api() -> Api {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = kedge_apiserver::Config::new(dir.path());
    cfg.port = 0;
    let server = kedge_apiserver::start(cfg).await.expect("api");
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("cfg");
    let client = kube::Client::try_from(kcfg).expect("client");
    Api {
        dir,
        server,
        client,
    }
}

/// The cloud on loopback with free ports.
pub fn cloud_config(data_dir: &Path) -> kedge_cloud::CloudConfig {
    kedge_cloud::CloudConfig {
        data_dir: data_dir.to_path_buf(),
        bind: "127.0.0.1".parse().expect("ip"),
        hub_port: 0,
        https_port: 0,
        names: Vec::new(),
        hub: Default::default(),
        lifecycle: Default::default(),
        node_cert_ttl: kedge_pki::node::NODE_CERT_TTL,
        router: kedge_cloud::router::rest::RouterConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        },
        bulk: None,
        workloads: false,
        cloudstream: None,
        pki_secret: None,
        replicas: None,
    }
}

/// Polls `check` until it holds, failing the test after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Names the test servers' certificates carry.
pub fn names() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

/// The cloud CA in `api`'s data dir and a join server on a free loopback port.
pub async fn join_server(api: &Api) -> (std::sync::Arc<kedge_pki::Ca>, kedge_http::Listener) {
    let ca = std::sync::Arc::new(kedge_pki::Ca::load_or_create(api.dir.path()).expect("ca"));
    let join = kedge_cloud::cloudhub::join::start(
        "127.0.0.1:0".parse().expect("addr"),
        ca.clone(),
        api.client.clone(),
        &names(),
        kedge_pki::node::NODE_CERT_TTL,
    )
    .await
    .expect("join");
    (ca, join)
}
