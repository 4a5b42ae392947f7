//! The Deployment controller: acts on `plan` (ReplicaSets created, scaled, revised, removed)
//! and writes the status `kubectl rollout status` waits on. Each step is one reconcile; the
//! ReplicaSets' status changes bring the Deployment back for the next.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;

use super::events::Recorder;
use super::podctl::write_status;
use super::pods::controlled_by;
use super::runtime::{Key, lookup};
use plan::{Action, REVISION};
use serde_json::json;

pub struct Controller {
    client: kube::Client,
    pub deployments: Store<Deployment>,
    pub sets: Store<ReplicaSet>,
    events: Recorder,
}

impl Controller {
    pub fn new(
        client: kube::Client,
        deployments: Store<Deployment>,
        sets: Store<ReplicaSet>,
    ) -> Arc<Controller> {
        Arc::new(Controller {
            events: Recorder::new(client.clone(), "deployment-controller"),
            client,
            deployments,
            sets,
        })
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let Some(d) = lookup(&self.deployments, &key) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<ReplicaSet>> = self
            .sets
            .state()
            .into_iter()
            .filter(|r| {
                r.metadata.namespace == d.metadata.namespace && controlled_by(&r.metadata, &uid)
            })
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let p = plan::plan(&d, &owned, jiff::Timestamp::now());
        let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.0);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &key.0);
        let pp = PatchParams::default();
        for a in p.actions {
            match a {
                Action::Create(rs) => {
                    let to = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    match sets.create(&PostParams::default(), &rs).await {
                        Ok(rs) => {
                            self.scaled(&d, "up", rs.metadata.name.as_deref().unwrap_or(""), 0, to)
                        }
                        // A ReplicaSet of that name but another template: the next hash.
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            let count = d
                                .status
                                .as_ref()
                                .and_then(|s| s.collision_count)
                                .unwrap_or(0)
                                + 1;
                            let body = json!({"status": {"collisionCount": count}});
                            deployments
                                .patch_status(&key.1, &pp, &Patch::Merge(body))
                                .await?;
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Action::Scale { name, from, to } => {
                    let body = json!({"spec": {"replicas": to}});
                    sets.patch(&name, &pp, &Patch::Merge(body)).await?;
                    self.scaled(&d, if to > from { "up" } else { "down" }, &name, from, to);
                }
                Action::Revise { name, revision } => {
                    let body =
                        json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
                    sets.patch(&name, &pp, &Patch::Merge(body)).await?;
                }
                Action::Delete(name) => match sets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                },
                Action::Annotate(revision) => {
                    let body =
                        json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
                    deployments.patch(&key.1, &pp, &Patch::Merge(body)).await?;
                }
            }
        }
        write_status::<Deployment, _>(&self.client, &key, d.status.as_ref(), &p.status).await?;
        Ok(None)
    }

    fn scaled(&self, d: &Deployment, dir: &str, rs: &str, from: i32, to: i32) {
        let msg = format!("Scaled {dir} replica set {rs} from {from} to {to}");
        self.events.normal(
            "Deployment",
            "apps/v1",
            &d.metadata,
            "ScalingReplicaSet",
            msg,
        );
    }
}
