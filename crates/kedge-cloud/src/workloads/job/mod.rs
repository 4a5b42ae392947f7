//! The Job controller: acts on `plan` (pods `<job>-<random>` made and stopped, the status and
//! its `Complete`/`Failed` condition written) and comes back when a back-off or deadline is due.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::podctl::PodControl;
use super::pods::{from_template, owned_by, owner_ref};
use super::runtime::{Key, lookup};

pub struct Controller {
    client: kube::Client,
    pods: Store<Pod>,
    pub jobs: Store<Job>,
    ctl: PodControl,
}

impl Controller {
    pub fn new(client: kube::Client, pods: Store<Pod>, jobs: Store<Job>) -> Arc<Controller> {
        Arc::new(Controller {
            ctl: PodControl::new(client.clone(), "job-controller", "Job", "batch/v1"),
            client,
            pods,
            jobs,
        })
    }

    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let Some(job) = lookup(&self.jobs, &key) else {
            self.ctl.forget(&key);
            return Ok(None);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let mine = owned_by(&self.pods, &job.metadata);
        if !self.ctl.settled(&key, &mine) {
            return Ok(Some(Duration::from_secs(1)));
        }
        let p = plan::plan(&job, &mine, jiff::Timestamp::now());
        if p.create > 0 {
            let template = job
                .spec
                .as_ref()
                .map(|s| s.template.clone())
                .unwrap_or_default();
            let owner = owner_ref("batch/v1", "Job", &job.metadata);
            let pod = from_template(&template, owner, None, &BTreeMap::new());
            self.ctl.create(&job.metadata, vec![pod; p.create]).await?;
        }
        if !p.delete.is_empty() {
            self.ctl.delete(&job.metadata, p.delete).await?;
        }
        if job.status.as_ref() != Some(&p.status) {
            let api: Api<Job> = Api::namespaced(self.client.clone(), &key.0);
            let body = json!({"status": p.status});
            api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(body))
                .await?;
        }
        Ok(p.again_in.map(|s| Duration::from_secs(s.max(1) as u64)))
    }
}
