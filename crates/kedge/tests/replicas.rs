//! `kedge cloud --kubeconfig` as several replicas on one cluster (issue #20). One kedge's
//! embedded API stands in for the cluster (kube-rs sees no difference).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{EdgeProc, Kedge, http_get, kedge_token as token, wait_until};

/// The CA fingerprint a join token carries (`<sha256 of the CA>.<JWT>`).
fn fingerprint(token: &str) -> &str {
    token.split_once('.').expect("fingerprint.jwt").0
}

fn token_key(data_dir: &Path) -> Vec<u8> {
    std::fs::read(data_dir.join("pki/token.key")).unwrap_or_default()
}

#[test]
fn replicas_started_together_serve_one_ca_and_accept_one_token_key() {
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let cluster = Kedge::cloud(dirs[0].path());
    let kubeconfig = cluster.kubeconfig().display().to_string();
    // Three replicas started at the same moment on a cluster without the Secret.
    let replicas: Vec<Kedge> = std::thread::scope(|s| {
        let started: Vec<_> = (1..4)
            .map(|i| {
                let (dir, kc) = (dirs[i].path(), kubeconfig.as_str());
                s.spawn(move || Kedge::cloud_with(dir, 0, 0, 0, &["--kubeconfig", kc]))
            })
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("a replica started"))
            .collect()
    });
    let cluster_token = token(&["--kubeconfig", &kubeconfig]);
    for (i, d) in dirs[1..4].iter().enumerate() {
        let own = token(&["--data-dir", &d.path().display().to_string()]);
        assert_eq!(
            fingerprint(&own),
            fingerprint(&cluster_token),
            "replica {i} serves the cluster's one CA"
        );
    }
    let stored = cluster.ok(&["get", "secrets", "-n", "kedge", "-o", "name"]);
    assert_eq!(stored.trim(), "secret/kedge-cloud-pki", "one Secret");

    // A token from the cluster joins an edge through any replica.
    let _e1 = EdgeProc::start(&replicas[2], dirs[4].path(), "kube-edge-1", &cluster_token);
    wait_until(Duration::from_secs(60), "kube-edge-1 Ready", || {
        (cluster.node_ready("kube-edge-1") == "True").then_some(())
    });

    // A rotation in the Secret reaches every replica's data directory.
    let before = token_key(dirs[1].path());
    let rotated = token(&["--kubeconfig", &kubeconfig, "--rotate"]);
    assert_eq!(fingerprint(&rotated), fingerprint(&cluster_token));
    wait_until(
        Duration::from_secs(20),
        "every replica has the new key",
        || {
            let keys: Vec<Vec<u8>> = dirs[1..4].iter().map(|d| token_key(d.path())).collect();
            (keys.iter().all(|k| *k != before && *k == keys[0])).then_some(())
        },
    );
    let _e2 = EdgeProc::start(&replicas[0], dirs[5].path(), "kube-edge-2", &rotated);
    wait_until(Duration::from_secs(60), "kube-edge-2 Ready", || {
        (cluster.node_ready("kube-edge-2") == "True").then_some(())
    });
    drop(replicas);
}

/// `dirs` temporary directories, the cluster (an embedded API) in the first, its kubeconfig, and
/// two `kedge cloud --kubeconfig` replicas in the next two.
fn two_replicas(dirs: usize) -> (Vec<tempfile::TempDir>, Kedge, String, Vec<Kedge>) {
    let dirs: Vec<_> = (0..dirs)
        .map(|_| tempfile::tempdir().expect("tmp"))
        .collect();
    let cluster = Kedge::cloud(dirs[0].path());
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let replicas = (1..3)
        .map(|i| Kedge::cloud_with(dirs[i].path(), 0, 0, 0, &["--kubeconfig", &kubeconfig]))
        .collect();
    (dirs, cluster, kubeconfig, replicas)
}

/// Edge sessions a replica holds, from its `/metrics`.
fn connected(replica: &Kedge) -> u64 {
    http_get(&replica.metrics)
        .lines()
        .find_map(|l| l.strip_prefix("kedge_cloudhub_connected_nodes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_edge_given_several_replicas_fails_over_when_its_replica_dies() {
    let (dirs, cluster, kubeconfig, mut replicas) = two_replicas(4);
    // A host that refuses connections comes first in the list.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let list = format!(
        "127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{}",
        replicas[0].hub_port, replicas[1].hub_port
    );
    let t = token(&["--kubeconfig", &kubeconfig]);
    let _edge = EdgeProc::start_through(
        &replicas[0],
        dirs[3].path(),
        "kube-edge-1",
        &t,
        &["--cloud", &list],
        replicas[0].hub_port,
    );
    wait_until(Duration::from_secs(60), "kube-edge-1 Ready", || {
        (cluster.node_ready("kube-edge-1") == "True").then_some(())
    });
    let holder = wait_until(Duration::from_secs(10), "one replica holds it", || {
        let held: Vec<u64> = replicas.iter().map(connected).collect();
        (held.iter().sum::<u64>() == 1).then(|| held.iter().position(|&n| n == 1))
    })
    .expect("a holder");
    replicas[holder].kill9();
    let other = &replicas[1 - holder];
    wait_until(
        Duration::from_secs(45),
        "the edge on the other replica",
        || (connected(other) == 1).then_some(()),
    );
    wait_until(
        Duration::from_secs(20),
        "kube-edge-1 Ready after the failover",
        || (cluster.node_ready("kube-edge-1") == "True").then_some(()),
    );
}

/// A field of the replicas' leader Lease (empty when there is none).
fn leader_lease(cluster: &Kedge, field: &str) -> String {
    let path = format!("jsonpath={{.spec.{field}}}");
    let args = [
        "get",
        "lease",
        "-n",
        "kedge",
        "kedge-cloud-leader",
        "-o",
        &path,
    ];
    String::from_utf8_lossy(&cluster.kubectl(&args).stdout).into_owned()
}

/// The Lease's holder.
fn leader(cluster: &Kedge) -> String {
    leader_lease(cluster, "holderIdentity")
}

#[test]
fn the_leader_killed_another_replica_takes_over_cluster_wide_work() {
    let (_dirs, cluster, _, mut replicas) = two_replicas(3);
    // Each replica's name in the election ends with its CloudHub port.
    let of = |holder: &str, r: &Kedge| holder.ends_with(&format!("-{}", r.hub_port));
    let first = wait_until(Duration::from_secs(20), "a leader", || {
        let h = leader(&cluster);
        replicas.iter().position(|r| of(&h, r))
    });
    replicas[first].kill9();
    let next = &replicas[1 - first];
    let killed = std::time::Instant::now();
    // The Lease lasts 15 s; the other replica retries every 2 s.
    wait_until(Duration::from_secs(30), "the other replica leads", || {
        of(&leader(&cluster), next).then_some(())
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(10),
        "not taken while it was fresh"
    );
    assert_eq!(leader_lease(&cluster, "leaseTransitions"), "1");
}
