//! When a container is (re)started, and the pod's phase: kubelet's rules, pure. A container
//! that exits is restarted as its pod's `restartPolicy` says, the first time at once and then
//! after a back-off that doubles up to a maximum (CrashLoopBackOff); a container that has not
//! crashed for twice the maximum starts over from the initial delay.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// A container as the runtime shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Created but never started (the edge stopped between the two calls).
    Created,
    Running,
    Exited {
        code: i32,
        finished_ms: u64,
    },
}

/// What to do with one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Running, or finished for good.
    Keep,
    /// Create and start it (again).
    Start,
    /// Crashed; it may restart after `delay`, `remaining` from now (CrashLoopBackOff).
    BackOff {
        delay: Duration,
        remaining: Duration,
    },
}

/// Per-container restart delays, keyed by pod UID and container name.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Current delay and when it was last raised (ms).
    entries: HashMap<String, (Duration, u64)>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            entries: HashMap::new(),
        }
    }

    fn current(&self, key: &str, now_ms: u64) -> Option<Duration> {
        let (delay, at) = self.entries.get(key)?;
        let stale = now_ms.saturating_sub(*at) > 2 * self.max.as_millis() as u64;
        (!stale).then_some(*delay)
    }

    /// Records a restart: the next one waits longer.
    pub fn restarted(&mut self, key: &str, now_ms: u64) {
        let next = match self.current(key, now_ms) {
            Some(d) => (d * 2).min(self.max),
            None => self.initial,
        };
        self.entries.insert(key.into(), (next, now_ms));
    }

    pub fn forget_pod(&mut self, uid: &str) {
        self.entries.retain(|k, _| !k.starts_with(uid));
    }

    /// What to do with the container `key` as observed (None: it does not exist).
    pub fn decide(
        &self,
        key: &str,
        observed: Option<&Observed>,
        policy: RestartPolicy,
        now_ms: u64,
    ) -> Action {
        match observed {
            None | Some(Observed::Created) => Action::Start,
            Some(Observed::Running) => Action::Keep,
            Some(Observed::Exited { code, finished_ms }) => {
                if !policy.restarts(*code) {
                    return Action::Keep;
                }
                let Some(delay) = self.current(key, now_ms) else {
                    return Action::Start;
                };
                let at = finished_ms + delay.as_millis() as u64;
                if now_ms >= at {
                    Action::Start
                } else {
                    Action::BackOff {
                        delay,
                        remaining: Duration::from_millis(at - now_ms),
                    }
                }
            }
        }
    }
}

/// A container's place in the pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForPhase {
    /// Never ran yet (image, config, sandbox not ready).
    NotStarted,
    Running,
    /// Exited and will be started again.
    Restarting,
    Succeeded,
    Failed,
}

/// The pod phase from its containers (kubelet's `getPhase`, without init containers).
pub fn phase(containers: &[ForPhase]) -> &'static str {
    use ForPhase::*;
    if containers.is_empty() || containers.contains(&NotStarted) {
        return "Pending";
    }
    if containers.iter().any(|c| matches!(c, Running | Restarting)) {
        return "Running";
    }
    if containers.contains(&Failed) {
        "Failed"
    } else {
        "Succeeded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn crash_loops_back_off_doubling_to_the_maximum() {
        let mut b = Backoff::new(S, 4 * S);
        let exited = |at| Observed::Exited {
            code: 1,
            finished_ms: at,
        };
        // The first crash restarts at once.
        assert_eq!(
            b.decide("u/c", Some(&exited(0)), RestartPolicy::Always, 0),
            Action::Start
        );
        b.restarted("u/c", 0);
        // Then 1 s, 2 s, 4 s, 4 s.
        let mut now = 100;
        for want in [1, 2, 4, 4] {
            let a = b.decide("u/c", Some(&exited(now)), RestartPolicy::Always, now);
            assert_eq!(
                a,
                Action::BackOff {
                    delay: want * S,
                    remaining: want * S
                }
            );
            now += ms(want);
            assert_eq!(
                b.decide(
                    "u/c",
                    Some(&exited(now - ms(want))),
                    RestartPolicy::Always,
                    now
                ),
                Action::Start
            );
            b.restarted("u/c", now);
        }
        // Quiet for twice the maximum: back to the start.
        now += 9_000;
        assert_eq!(
            b.decide("u/c", Some(&exited(now)), RestartPolicy::Always, now),
            Action::Start
        );
        b.restarted("u/c", now);
        assert_eq!(b.current("u/c", now), Some(S));
    }

    fn ms(secs: u32) -> u64 {
        u64::from(secs) * 1000
    }

    #[test]
    fn restart_policies() {
        let b = Backoff::new(S, S);
        let ok = Observed::Exited {
            code: 0,
            finished_ms: 0,
        };
        let bad = Observed::Exited {
            code: 2,
            finished_ms: 0,
        };
        assert_eq!(
            b.decide("k", Some(&ok), RestartPolicy::OnFailure, 0),
            Action::Keep
        );
        assert_eq!(
            b.decide("k", Some(&bad), RestartPolicy::OnFailure, 0),
            Action::Start
        );
        assert_eq!(
            b.decide("k", Some(&bad), RestartPolicy::Never, 0),
            Action::Keep
        );
        assert_eq!(b.decide("k", None, RestartPolicy::Never, 0), Action::Start);
        assert_eq!(
            b.decide("k", Some(&Observed::Running), RestartPolicy::Never, 0),
            Action::Keep
        );
    }

    #[test]
    fn phases() {
        use ForPhase::*;
        assert_eq!(phase(&[Running, NotStarted]), "Pending");
        assert_eq!(phase(&[Running, Succeeded]), "Running");
        assert_eq!(phase(&[Restarting]), "Running");
        assert_eq!(phase(&[Succeeded, Failed]), "Failed");
        assert_eq!(phase(&[Succeeded]), "Succeeded");
    }
}
