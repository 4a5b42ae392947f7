//! A Job's next step (pure): up to `parallelism` pods at a time until `completions` succeeded
//! (or, without `completions`, until one succeeds and the rest end); failed pods — and restarts,
//! with `restartPolicy: OnFailure` — count against `backoffLimit`, and each failure delays the
//! next pod (10 s, doubling, at most 6 min); `activeDeadlineSeconds` ends it. The status carries
//! the counts, the start and completion times and the `Complete`/`Failed` condition.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::workloads::pods::{deletion_rank, is_active, is_ready, phase, restarts};

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    pub delete: Vec<String>,
    pub status: JobStatus,
    /// Come back after this many seconds (a back-off or a deadline to wait for).
    pub again_in: Option<i64>,
}

fn finished(status: &JobStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
}

/// When the last failed container ended (seconds).
fn last_failure(pods: &[Arc<Pod>]) -> Option<i64> {
    pods.iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max()
}

fn condition(type_: &str, reason: &str, message: &str, now: jiff::Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub fn plan(job: &Job, pods: &[Arc<Pod>], now: jiff::Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    let failed_pods = pods.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let failures = failed_pods
        + if on_failure {
            active.iter().map(|p| restarts(p)).sum()
        } else {
            0
        };
    let start = old.start_time.clone().unwrap_or(Time(now));
    let mut status = JobStatus {
        start_time: Some(start.clone()),
        succeeded: (succeeded > 0).then_some(succeeded),
        failed: (failed_pods > 0).then_some(failed_pods),
        conditions: old.conditions.clone(),
        completion_time: old.completion_time.clone(),
        ..Default::default()
    };
    let mut plan = Plan::default();
    let stop_all = |plan: &mut Plan, active: &[&Arc<Pod>]| {
        plan.delete
            .extend(active.iter().filter_map(|p| p.metadata.name.clone()));
    };
    if finished(&old) {
        stop_all(&mut plan, &active);
        status.start_time = old.start_time;
        plan.status = status;
        return plan;
    }
    let elapsed = now.as_second() - start.0.as_second();
    let deadline = spec.active_deadline_seconds;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let done = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded >= 1 && active.is_empty(),
    };
    let failure = if deadline.is_some_and(|d| elapsed >= d) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else if failures > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        stop_all(&mut plan, &active);
        status.conditions = Some(vec![condition("Failed", reason, message, now)]);
    } else if done {
        status.conditions = Some(vec![
            condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ),
            condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ),
        ]);
        status.completion_time = Some(Time(now));
        stop_all(&mut plan, &active);
    } else {
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = if spec.suspend == Some(true) {
            0
        } else {
            match spec.completions {
                Some(c) => parallelism.min(c - succeeded),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
        };
        let have = active.len() as i32;
        if have > want {
            active.sort_by_key(|p| deletion_rank(p));
            let surplus = (have - want) as usize;
            plan.delete.extend(
                active[..surplus]
                    .iter()
                    .filter_map(|p| p.metadata.name.clone()),
            );
        } else if have < want {
            let wait = back_off(failures, last_failure(pods), now.as_second());
            if wait > 0 {
                plan.again_in = Some(wait);
            } else {
                plan.create = (want - have) as usize;
            }
        }
        if let Some(d) = deadline {
            plan.again_in = Some(
                plan.again_in
                    .map_or(d - elapsed, |w| w.min(d - elapsed))
                    .max(1),
            );
        }
    }
    let running = if plan.delete.is_empty() {
        active.len()
    } else {
        0
    };
    status.active = (running > 0).then_some(running as i32);
    status.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
    plan.status = status;
    plan
}

/// Seconds still to wait before a new pod after `failures` failures, the last at `last`.
fn back_off(failures: i32, last: Option<i64>, now: i64) -> i64 {
    if failures == 0 {
        return 0;
    }
    let delay = (10i64 << (failures - 1).min(6)).min(360);
    last.map_or(0, |t| (t + delay - now).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::pods::tests::pod;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn job(completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(1),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("time")
    }

    #[test]
    fn runs_parallelism_pods_until_completions_succeeded() {
        let j = job(Some(3), 2);
        assert_eq!(plan(&j, &[], t(100)).create, 2);
        let done = Arc::new(pod("a", Some("n"), "Succeeded", false));
        let running = Arc::new(pod("b", Some("n"), "Running", true));
        let p = plan(&j, &[done.clone(), running.clone()], t(100));
        assert_eq!(p.create, 1, "two left to do, one running: one more");
        let all: Vec<_> = (0..3)
            .map(|i| Arc::new(pod(&format!("p{i}"), Some("n"), "Succeeded", false)))
            .collect();
        let p = plan(&j, &all, t(100));
        assert!(finished(&p.status));
        assert_eq!(p.status.succeeded, Some(3));
        assert_eq!(p.status.completion_time, Some(Time(t(100))));
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job() {
        let j = job(Some(1), 1);
        let failed: Vec<_> = (0..2)
            .map(|i| Arc::new(pod(&format!("f{i}"), Some("n"), "Failed", false)))
            .collect();
        let p = plan(&j, &failed, t(100));
        let c = p
            .status
            .conditions
            .as_ref()
            .and_then(|c| c.first())
            .expect("condition");
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("Failed", Some("BackoffLimitExceeded"))
        );
        assert_eq!(p.create, 0);
    }

    #[test]
    fn a_deadline_ends_the_job_and_its_pods() {
        let mut j = job(Some(1), 1);
        if let Some(s) = j.spec.as_mut() {
            s.active_deadline_seconds = Some(5);
        }
        j.status = Some(JobStatus {
            start_time: Some(Time(t(100))),
            ..Default::default()
        });
        let running = Arc::new(pod("r", Some("n"), "Running", true));
        let p = plan(&j, std::slice::from_ref(&running), t(103));
        assert_eq!(p.again_in, Some(2));
        let p = plan(&j, &[running], t(106));
        assert_eq!(p.delete, vec!["r".to_string()]);
        let c = p
            .status
            .conditions
            .as_ref()
            .and_then(|c| c.first())
            .expect("condition");
        assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
    }

    #[test]
    fn back_off_doubles_from_ten_seconds() {
        assert_eq!(back_off(0, Some(100), 100), 0);
        assert_eq!(back_off(1, Some(100), 105), 5);
        assert_eq!(back_off(2, Some(100), 105), 15);
        assert_eq!(back_off(20, Some(100), 100), 360);
    }
}
