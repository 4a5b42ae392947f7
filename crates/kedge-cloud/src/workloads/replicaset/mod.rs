//! The ReplicaSet controller: keeps `spec.replicas` pods of the template running (creating the
//! missing, deleting the surplus in `pods::deletion_rank` order) and reports how many are ready
//! and available.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

use super::podctl::{PodControl, write_status};
use super::pods::{deletion_rank, from_template, is_active, is_available, is_ready, owner_ref};
use super::runtime::{Key, key_of};

pub struct Controller {
    client: kube::Client,
    pub pods: Store<Pod>,
    pub sets: Store<ReplicaSet>,
    ctl: PodControl,
}

impl Controller {
    pub fn new(client: kube::Client, pods: Store<Pod>, sets: Store<ReplicaSet>) -> Arc<Controller> {
        Arc::new(Controller {
            ctl: PodControl::new(
                client.clone(),
                "replicaset-controller",
                "ReplicaSet",
                "apps/v1",
            ),
            client,
            pods,
            sets,
        })
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let (rs, mine) = match self.ctl.owner_and_pods(&self.sets, &self.pods, &key) {
            Ok(found) => found,
            Err(again) => return Ok(again),
        };
        let mut active: Vec<Arc<Pod>> = mine.iter().filter(|p| is_active(p)).cloned().collect();
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        if active.len() < want
            && let Some(t) = rs.spec.as_ref().and_then(|s| s.template.as_ref())
        {
            let owner = owner_ref("apps/v1", "ReplicaSet", &rs.metadata);
            let pod = from_template(t, owner, None, &BTreeMap::new());
            self.ctl
                .create(&rs.metadata, vec![pod; want - active.len()])
                .await?;
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            let surplus = active[..active.len() - want]
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            self.ctl.delete(&rs.metadata, surplus).await?;
        }
        self.report(&rs, &mine).await
    }

    /// Writes the status when it changed; a pod ready but not yet available for
    /// `minReadySeconds` brings the ReplicaSet back when it will be.
    async fn report(
        &self,
        rs: &ReplicaSet,
        mine: &[Arc<Pod>],
    ) -> Result<Option<Duration>, kube::Error> {
        let (status, pending) = status_of(rs, mine, jiff::Timestamp::now().as_second());
        let key = key_of(&rs.metadata);
        write_status::<ReplicaSet, _>(&self.client, &key, rs.status.as_ref(), &status).await?;
        Ok(pending)
    }
}

/// The status `pods` make (one pass over them), and when to look again if a ready pod is not
/// yet available.
fn status_of(rs: &ReplicaSet, pods: &[Arc<Pod>], now: i64) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = i64::from(spec.and_then(|s| s.min_ready_seconds).unwrap_or(0));
    let wanted = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let (mut n, mut labeled, mut ready, mut available) = (0, 0, 0, 0);
    for p in pods.iter().filter(|p| is_active(p)) {
        n += 1;
        let labels = p.metadata.labels.as_ref();
        if wanted.is_none_or(|w| {
            w.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        }) {
            labeled += 1;
        }
        if is_ready(p) {
            ready += 1;
            if is_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    let status = ReplicaSetStatus {
        replicas: n,
        fully_labeled_replicas: Some(labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: None,
        terminating_replicas: None,
    };
    let again = (ready > available).then(|| Duration::from_secs(min_ready.max(1) as u64));
    (status, again)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::pods::tests::pod;

    #[test]
    fn status_counts_active_ready_and_available_pods() {
        let rs = ReplicaSet {
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                min_ready_seconds: Some(10),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = [
            Arc::new(pod("a", Some("n"), "Running", true)),
            Arc::new(pod("b", Some("n"), "Pending", false)),
            Arc::new(pod("c", Some("n"), "Succeeded", false)),
        ];
        let (s, again) = status_of(&rs, &pods, 1005);
        assert_eq!(
            (s.replicas, s.ready_replicas, s.available_replicas),
            (2, Some(1), Some(0))
        );
        assert_eq!(again, Some(Duration::from_secs(10)));
        let (s, again) = status_of(&rs, &pods, 1010);
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(again, None);
    }
}
