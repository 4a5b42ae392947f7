//! The Job controller: acts on `plan` (pods `<job>-<random>` made and stopped, the status and
//! its `Complete`/`Failed` condition written) and comes back when a back-off or deadline is due.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

use super::podctl::{PodControl, write_status};
use super::pods::{from_template, owner_ref};
use super::runtime::Key;

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
        let (job, mine) = match self.ctl.owner_and_pods(&self.jobs, &self.pods, &key) {
            Ok(found) => found,
            Err(again) => return Ok(again),
        };
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
        write_status::<Job, _>(&self.client, &key, job.status.as_ref(), &p.status).await?;
        Ok(p.again_in.map(|s| Duration::from_secs(s.max(1) as u64)))
    }
}
