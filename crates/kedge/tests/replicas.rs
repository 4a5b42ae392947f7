//! `kedge cloud --kubeconfig` as several replicas on one cluster (issue #20). One kedge's
//! embedded API stands in for the cluster (kube-rs sees no difference).

#[path = "common/app.rs"]
mod app;
mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
    // Each replica's name in the election is the one it prints.
    let of = |holder: &str, r: &Kedge| holder == replica_id(r);
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
    // Cluster-wide work resumed there: a new Device's profile ConfigMap and DeviceStatus.
    let device = std::fs::read_to_string(common::examples().join("device-counter.yaml"))
        .expect("device")
        .replace("kube-edge-1", "kube-edge-2");
    cluster.ok(&["apply", "-f", &example("devicemodel-counter.yaml")]);
    cluster.apply(&device);
    wait_until(
        Duration::from_secs(20),
        "the new leader writes the profile",
        || {
            let got = cluster.kubectl(&["get", "configmap", "device-profile-config-kube-edge-2"]);
            let status = cluster.kubectl(&["get", "devicestatus", "counter"]);
            (got.status.success() && status.status.success()).then_some(())
        },
    );
}

/// This replica's name, from its `peer listener:` line.
fn replica_id(r: &Kedge) -> String {
    let line = &r.endpoints["peer listener"];
    line.split_once("(replica ")
        .and_then(|(_, rest)| rest.split_once(','))
        .map(|(id, _)| id.to_string())
        .unwrap_or_else(|| panic!("a replica name in {line:?}"))
}

/// `curl -X POST -d <body> <url>` → (status, body).
fn post(url: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "40",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            url,
            "-d",
            body,
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn example(name: &str) -> String {
    common::examples().join(name).display().to_string()
}

/// The seed's Device's reported value.
fn reported(cluster: &Kedge) -> String {
    let path = "jsonpath={.status.twins[0].reported.value}";
    String::from_utf8_lossy(
        &cluster
            .kubectl(&["get", "device", "counter", "-o", path])
            .stdout,
    )
    .into_owned()
}

/// Reads `sub` until every payload of `want` has arrived (each within `within` of the last).
fn arrive_all(sub: &mut mqtt::Sub, want: &[String], within: Duration) {
    let mut seen = std::collections::HashSet::new();
    while let Some(missing) = want.iter().find(|w| !seen.contains(*w)) {
        let (_, payload) = sub
            .next_raw(within)
            .unwrap_or_else(|| panic!("{missing} was answered 200 but never arrived"));
        seen.insert(payload);
    }
}

#[test]
fn three_replicas_share_the_fleet_and_lose_nothing_when_one_dies() {
    // These names hash to replicas 0, 1 and 2 of the list: one edge starts on each.
    const NODES: [&str; 3] = ["kube-edge-3", "kube-edge-1", "kube-edge-7"];
    let dirs: Vec<_> = (0..7).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let cluster = Kedge::cloud(dirs[0].path());
    let kubeconfig = cluster.kubeconfig().display().to_string();
    cluster.ok(&[
        "apply",
        "-f",
        &example("devicemodel-counter.yaml"),
        "-f",
        &example("device-counter.yaml"),
        "-f",
        &example("ruleEndpoint-rest.yaml"),
        "-f",
        &example("ruleEndpoint-eventbus.yaml"),
        "-f",
        &example("rule-rest-eventbus.yaml"),
    ]);
    let app = app::App::start(0);
    app::eventbus_to_app(&cluster, app.port);
    let mut replicas: Vec<Kedge> = (1..4)
        .map(|i| Kedge::cloud_with(dirs[i].path(), 0, 0, 0, &["--kubeconfig", &kubeconfig]))
        .collect();
    let ids: Vec<String> = replicas.iter().map(replica_id).collect();
    let list: Vec<String> = replicas
        .iter()
        .map(|r| format!("127.0.0.1:{}", r.hub_port))
        .collect();
    let list = list.join(",");
    let t = token(&["--kubeconfig", &kubeconfig]);
    let edges: Vec<EdgeProc> = NODES
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let extra = ["--cloud", list.as_str()];
            let hub = replicas[0].hub_port;
            EdgeProc::start_through(&replicas[0], dirs[4 + i].path(), node, &t, &extra, hub)
        })
        .collect();

    // Spread: one edge on each replica, and each Node names the replica holding it.
    wait_until(
        Duration::from_secs(60),
        "every edge Ready on its replica",
        || {
            let ready = NODES.iter().all(|n| cluster.node_ready(n) == "True");
            (ready && replicas.iter().map(connected).collect::<Vec<_>>() == [1, 1, 1]).then_some(())
        },
    );
    let owner_of = |node: &str| {
        let path = "jsonpath={.metadata.annotations.kedge\\.io/cloud-replica}";
        String::from_utf8_lossy(&cluster.kubectl(&["get", "node", node, "-o", path]).stdout)
            .into_owned()
    };
    for (i, node) in NODES.iter().enumerate() {
        wait_until(
            Duration::from_secs(10),
            "the Node names its replica",
            || (owner_of(node) == ids[i]).then_some(()),
        );
    }

    // The peer listener takes only replicas: an edge's certificate of the same CA is refused,
    // and so is a client without one.
    let peer = replicas[0].endpoints["peer listener"].clone();
    let peer = peer.split(' ').next().expect("url").to_string();
    let pki = dirs[4].path().join("pki");
    let (ca, counts) = (pki.join("ca.crt"), format!("{peer}/kedge/rule-counts"));
    let curl = |args: &[&str]| {
        let ca = ca.display().to_string();
        let call = ["-X", "POST", "-d", "{}", "--cacert", &ca];
        common::http_status(&[&call[..], args, &[&counts]].concat())
    };
    assert_eq!(
        curl(&["--cert", &pki.join("node.pem").display().to_string()]),
        "403"
    );
    assert_eq!(curl(&[]), "000", "no client certificate: no TLS session");

    // Router calls to any replica reach every node, through the holder.
    let mut subs: Vec<mqtt::Sub> = edges
        .iter()
        .map(|e| mqtt::Sub::start(e.mqtt_port, "test"))
        .collect();
    for (r, replica) in replicas.iter().enumerate() {
        for (n, node) in NODES.iter().enumerate() {
            let url = format!("http://127.0.0.1:{}/{node}/default/a", replica.router_port);
            let body = format!("via replica {r} to {node}");
            let answer = wait_until(Duration::from_secs(30), "the rule in effect", || {
                let a = post(&url, &body);
                (a.0 != 404).then_some(a)
            });
            assert_eq!(answer, (200, "message delivered\n".into()), "{url}");
            let got = subs[n].next_raw(Duration::from_secs(10)).map(|(_, p)| p);
            assert_eq!(got.as_deref(), Some(body.as_str()), "{url}");
        }
    }
    // Every replica's counts reach the rule's status, written by the leader alone.
    wait_until(
        Duration::from_secs(20),
        "nine successes on the rule",
        || {
            let path = "jsonpath={.status.successMessages}";
            let n = cluster.ok(&["get", "rule", "my-rule", "-o", path]);
            (n.parse::<u64>().unwrap_or(0) >= 9).then_some(())
        },
    );
    // eventbus→rest from kube-edge-1 works before the failure.
    wait_until(Duration::from_secs(30), "an upload at the app", || {
        mqtt::publish(edges[1].mqtt_port, "default/test", "first");
        app.got.recv_timeout(Duration::from_millis(500)).ok()
    });
    while app.got.try_recv().is_ok() {}

    // Under load, the replica holding kube-edge-1 dies.
    let uploads: Vec<String> = (0..60).map(|i| format!("upload {i}")).collect();
    for u in &uploads[..30] {
        mqtt::publish(edges[1].mqtt_port, "default/test", u);
    }
    replicas[1].kill9();
    let killed = Instant::now();
    for u in &uploads[30..] {
        mqtt::publish(edges[1].mqtt_port, "default/test", u);
    }
    let twin = "$hw/events/device/default/counter/twin/update";
    mqtt::publish(
        edges[1].mqtt_port,
        twin,
        r#"{"event_id":"f","timestamp":0,"twin":{"status":{"actual":{"value":"7"}}}}"#,
    );
    // Router calls through the survivors meanwhile: delivered, or an honest 503 while the edge
    // moves; every delivered one arrives.
    let mut delivered = Vec::new();
    let mut not_ready = Duration::ZERO;
    let mut i = 0;
    wait_until(
        Duration::from_secs(60),
        "kube-edge-1 back, through both survivors",
        || {
            let before = Instant::now();
            let mut ok = 0;
            for r in [0, 2] {
                i += 1;
                let url = format!(
                    "http://127.0.0.1:{}/kube-edge-1/default/a",
                    replicas[r].router_port
                );
                let body = format!("during the failover {i}");
                let (code, text) = post(&url, &body);
                assert!(code == 200 || code == 503, "{code} {text}");
                if code == 200 {
                    delivered.push(body);
                    ok += 1;
                }
            }
            if cluster.node_ready("kube-edge-1") != "True" {
                not_ready += before.elapsed();
            }
            (ok == 2).then_some(())
        },
    );
    let took = killed.elapsed();
    arrive_all(&mut subs[1], &delivered, Duration::from_secs(10));
    assert!(
        not_ready < Duration::from_secs(40),
        "NotReady for {not_ready:?}"
    );
    let survivors = [&replicas[0], &replicas[2]];
    assert_eq!(
        survivors.iter().map(|r| connected(r)).sum::<u64>(),
        3,
        "all edges held"
    );
    // Nothing the edge handed over is lost: every upload reaches the app (at least once), and
    // the last twin report reaches the Device.
    let mut got = std::collections::BTreeSet::new();
    while !uploads.iter().all(|u| got.contains(u)) {
        let (_, body) = app
            .got
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "every upload; missing after {took:?}: {:?}",
                    uploads
                        .iter()
                        .filter(|u| !got.contains(*u))
                        .collect::<Vec<_>>()
                )
            });
        got.insert(body);
    }
    wait_until(
        Duration::from_secs(30),
        "the twin report after the failure",
        || (reported(&cluster) == "7").then_some(()),
    );
    // Every node through every survivor.
    for r in survivors {
        for (n, node) in NODES.iter().enumerate() {
            let url = format!("http://127.0.0.1:{}/{node}/default/a", r.router_port);
            let body = format!("after the failure, via {url}");
            assert_eq!(post(&url, &body).0, 200, "{url}");
            arrive_all(&mut subs[n], &[body], Duration::from_secs(10));
        }
    }
    assert_eq!(cluster.node_ready("kube-edge-1"), "True");
    drop(edges);
}
