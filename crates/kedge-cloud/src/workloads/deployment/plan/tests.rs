use super::*;
use crate::workloads::template::{template_hash, unhashed};
use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Container, PodSpec};

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn deployment(image: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d1".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            template: template(image),
            ..Default::default()
        }),
        status: None,
    }
}

/// The ReplicaSet `plan` would create for `d`, at `revision`, with `spec`/`ready` replicas.
fn rs_of(d: &Deployment, revision: i64, spec: i32, ready: i32) -> Arc<ReplicaSet> {
    let t = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut rs = new_replica_set(d, &t, revision, spec);
    rs.status = Some(ReplicaSetStatus {
        replicas: ready,
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        ..Default::default()
    });
    Arc::new(rs)
}

/// The plan's actions on ReplicaSets (the Deployment's own revision annotation aside).
fn steps(p: &Plan) -> Vec<Action> {
    p.actions
        .iter()
        .filter(|a| !matches!(a, Action::Annotate(_)))
        .cloned()
        .collect()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(2_000_000_000).expect("time")
}

#[test]
fn a_new_deployment_gets_a_replica_set_of_its_template() {
    let d = deployment("nginx:1", 3);
    let p = plan(&d, &[], now());
    let [Action::Create(rs)] = p.actions.as_slice() else {
        panic!("{:?}", p.actions);
    };
    let hash = template_hash(&d.spec.as_ref().expect("spec").template, 0);
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(rs.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(labels.get(HASH_LABEL), Some(&hash));
    assert_eq!(revision(rs), 1);
    let owner = &rs.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Deployment", Some(true))
    );
}

#[test]
fn a_rolling_update_surges_then_retires_old_pods_within_unavailability() {
    // 4 replicas, 25 %: surge 1, unavailable 1.
    let old_d = deployment("nginx:1", 4);
    let old = rs_of(&old_d, 1, 4, 4);
    let d = deployment("nginx:2", 4);
    let p = plan(&d, std::slice::from_ref(&old), now());
    let [Action::Create(new)] = p.actions.as_slice() else {
        panic!("{:?}", p.actions);
    };
    assert_eq!(
        new.spec.as_ref().and_then(|s| s.replicas),
        Some(1),
        "one surge pod"
    );
    assert_eq!(revision(new), 2);
    // New at 1 (not yet available): old may go down by 1 (4 + 1 - 3 - 1).
    let new = rs_of(&d, 2, 1, 0);
    let p = plan(&d, &[old.clone(), new.clone()], now());
    assert_eq!(
        steps(&p),
        vec![Action::Scale {
            name: old.metadata.name.clone().expect("name"),
            from: 4,
            to: 3
        }]
    );
    // Done: old at 0, new at 4 available.
    let old0 = rs_of(&old_d, 1, 0, 0);
    let new4 = rs_of(&d, 2, 4, 4);
    let p = plan(&d, &[old0, new4], now());
    assert!(
        p.actions.iter().all(|a| matches!(a, Action::Annotate(2))),
        "{:?}",
        p.actions
    );
    let progressing = p
        .status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        .expect("cond");
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    assert_eq!(p.status.updated_replicas, Some(4));
    assert_eq!(p.status.available_replicas, Some(4));
}

#[test]
fn undo_brings_an_old_replica_set_back_as_the_newest_revision() {
    let v1 = deployment("nginx:1", 2);
    let v2 = deployment("nginx:2", 2);
    let (rs1, rs2) = (rs_of(&v1, 1, 0, 0), rs_of(&v2, 2, 2, 2));
    // The template is v1's again (what `kubectl rollout undo` writes).
    let p = plan(&v1, &[rs1.clone(), rs2], now());
    assert_eq!(
        p.actions,
        vec![Action::Revise {
            name: rs1.metadata.name.clone().expect("name"),
            revision: 3
        }]
    );
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let old_d = deployment("nginx:1", 2);
    let mut d = deployment("nginx:2", 2);
    if let Some(s) = d.spec.as_mut() {
        s.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
    }
    let new = rs_of(&d, 2, 0, 0);
    let p = plan(&d, &[rs_of(&old_d, 1, 2, 2), new.clone()], now());
    assert!(
        matches!(steps(&p).as_slice(), [Action::Scale { to: 0, .. }]),
        "{:?}",
        p.actions
    );
    // Scaled to 0 but a pod still stopping: wait.
    let p = plan(&d, &[rs_of(&old_d, 1, 0, 1), new.clone()], now());
    assert!(steps(&p).is_empty(), "{:?}", p.actions);
    let p = plan(&d, &[rs_of(&old_d, 1, 0, 0), new.clone()], now());
    assert_eq!(
        p.actions.first(),
        Some(&Action::Scale {
            name: new.metadata.name.clone().expect("n"),
            from: 0,
            to: 2
        })
    );
}

#[test]
fn history_beyond_the_limit_is_removed_oldest_first() {
    let mut d = deployment("nginx:9", 1);
    if let Some(s) = d.spec.as_mut() {
        s.revision_history_limit = Some(1);
    }
    let olds: Vec<Arc<ReplicaSet>> = (1..=3)
        .map(|i| rs_of(&deployment(&format!("nginx:{i}"), 1), i, 0, 0))
        .collect();
    let mut all = olds.clone();
    all.push(rs_of(&d, 4, 1, 1));
    let p = plan(&d, &all, now());
    let deleted: Vec<&Action> = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Delete(_)))
        .collect();
    assert_eq!(
        deleted,
        vec![
            &Action::Delete(olds[0].metadata.name.clone().expect("n")),
            &Action::Delete(olds[1].metadata.name.clone().expect("n"))
        ]
    );
}

#[test]
fn surge_and_unavailable_round_like_kubernetes() {
    let d = deployment("x:1", 10);
    assert_eq!(surge_and_unavailable(&d, 10), (3, 2));
    assert_eq!(surge_and_unavailable(&d, 1), (1, 0));
}

#[test]
fn templates_differing_only_in_zero_values_are_the_same_template() {
    let d = deployment("nginx:1", 1);
    let mut t = d.spec.as_ref().expect("spec").template.clone();
    if let Some(s) = t.spec.as_mut() {
        s.host_network = Some(false);
        s.containers[0].stdin = Some(false);
    }
    assert_eq!(
        unhashed(&t),
        unhashed(&d.spec.as_ref().expect("spec").template)
    );
    assert_eq!(
        template_hash(&t, 0),
        template_hash(&d.spec.as_ref().expect("spec").template, 0)
    );
}
