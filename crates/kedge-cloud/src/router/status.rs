//! Rule status, under `status` (KubeEdge patches these keys at the top level, where the schema
//! prunes them, so its counters never persist): `successMessages`, `failMessages`, and the last
//! 10 errors, each prefixed with its time; and a `Ready` condition that says whether the rule
//! is in effect and, when not, why (its endpoints do not exist yet, or it can never route).
//! Counted in memory and written once a second per rule that changed, so a busy rule costs one
//! write a second, not one per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// Errors kept per rule.
pub const KEEP_ERRORS: usize = 10;

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub ok: u64,
    pub fail: u64,
    pub errors: Vec<String>,
    /// A new `Ready` condition.
    pub effect: Option<Effect>,
}

/// Whether a rule is in effect: its status's `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    InEffect,
    /// Not yet: it names an endpoint that does not exist (it takes effect when it appears).
    Waiting(String),
    /// It cannot route as it is (a missing key, a bad port, a source another rule has).
    Refused(String),
}

impl Effect {
    pub fn of(result: Result<(), &kedge_core::rule::RuleError>) -> Effect {
        match result {
            Ok(()) => Effect::InEffect,
            Err(e @ kedge_core::rule::RuleError::NoEndpoint(_)) => Effect::Waiting(e.to_string()),
            Err(e) => Effect::Refused(e.to_string()),
        }
    }

    /// (status, reason, message) of the condition.
    fn parts(&self) -> (&'static str, &'static str, &str) {
        match self {
            Effect::InEffect => ("True", "InEffect", "the rule routes messages"),
            Effect::Waiting(why) => ("False", "EndpointMissing", why),
            Effect::Refused(why) => ("False", "Invalid", why),
        }
    }

    /// Whether `status` (a rule's) already says this.
    pub fn shown_in(&self, status: &Value) -> bool {
        let (st, reason, message) = self.parts();
        ready_condition(status)
            .is_some_and(|c| c["status"] == st && c["reason"] == reason && c["message"] == message)
    }

    fn condition(&self, current: &Value, now: &str) -> Value {
        let (st, reason, message) = self.parts();
        let since = ready_condition(current)
            .filter(|c| c["status"] == st)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_string();
        json!({"type": "Ready", "status": st, "reason": reason, "message": message, "lastTransitionTime": since})
    }
}

fn ready_condition(status: &Value) -> Option<&Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

#[derive(Default)]
pub struct RuleStats {
    pending: Mutex<HashMap<String, Delta>>,
}

/// The status after `delta`, given the rule's current one.
pub fn merged(current: &Value, delta: &Delta) -> Value {
    let n = |k: &str| current.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut errors: Vec<String> = current
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(String::from))
        .chain(delta.errors.iter().cloned())
        .collect();
    let drop = errors.len().saturating_sub(KEEP_ERRORS);
    errors.drain(..drop);
    let mut status = json!({"successMessages": n("successMessages") + delta.ok, "failMessages": n("failMessages") + delta.fail, "errors": errors});
    let condition = match &delta.effect {
        Some(e) => Some(e.condition(current, &kedge_core::clock::rfc3339())),
        None => ready_condition(current).cloned(),
    };
    if let Some(c) = condition {
        status["conditions"] = json!([c]);
    }
    status
}

impl RuleStats {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Delta>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn success(&self, rule: &str) {
        self.pending().entry(rule.to_string()).or_default().ok += 1;
    }

    /// The rule's `Ready` condition is now `effect`.
    pub fn effect(&self, rule: &str, effect: Effect) {
        self.pending().entry(rule.to_string()).or_default().effect = Some(effect);
    }

    /// Adds counts gathered elsewhere (a follower's, handed to the leader; or a batch that
    /// could not be handed on, put back).
    pub fn add(&self, rule: &str, delta: Delta) {
        let mut p = self.pending();
        let d = p.entry(rule.to_string()).or_default();
        d.ok += delta.ok;
        d.fail += delta.fail;
        d.errors.extend(delta.errors);
        let drop = d.errors.len().saturating_sub(KEEP_ERRORS);
        d.errors.drain(..drop);
        if delta.effect.is_some() {
            d.effect = delta.effect;
        }
    }

    pub fn failure(&self, rule: &str, why: &str) {
        let mut p = self.pending();
        let d = p.entry(rule.to_string()).or_default();
        d.fail += 1;
        d.errors
            .push(format!("{} {why}", kedge_core::clock::rfc3339()));
        let drop = d.errors.len().saturating_sub(KEEP_ERRORS);
        d.errors.drain(..drop);
    }

    /// Writes what changed, every second, for as long as the cloud runs. Among replicas only
    /// the leader writes: the others hand it their counts (kept while no leader takes them).
    pub async fn flush_loop(
        self: Arc<Self>,
        client: kube::Client,
        replicas: Option<Arc<crate::replicas::Replicas>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if self.pending().is_empty() {
                continue;
            }
            match replicas.as_deref() {
                Some(r) if !r.leads() => self.hand_on(r).await,
                _ => self.write_all(&client).await,
            }
        }
    }

    async fn write_all(&self, client: &kube::Client) {
        let batch = std::mem::take(&mut *self.pending());
        for (rule, delta) in batch {
            if let Err(e) = write(client, &rule, &delta).await {
                tracing::debug!(rule, error = %e, "rule status not written");
            }
        }
    }

    /// Hands the counts to the leader; put back when it cannot take them.
    async fn hand_on(&self, r: &crate::replicas::Replicas) {
        let Some(peer) = r.leader_peer() else {
            return;
        };
        let batch = std::mem::take(&mut *self.pending());
        if let Err(e) = crate::replicas::peer::send_counts(r, &peer, &batch).await {
            tracing::debug!(leader = %peer, error = %e, "rule counts not handed to the leader; kept");
            for (rule, delta) in batch {
                self.add(&rule, delta);
            }
        }
    }
}

async fn write(client: &kube::Client, rule: &str, delta: &Delta) -> Result<(), kube::Error> {
    let Some((ns, name)) = rule.split_once('/') else {
        return Ok(());
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &super::resource("Rule", "rules"));
    let Some(current) = api.get_opt(name).await? else {
        return Ok(());
    };
    let status = merged(current.data.get("status").unwrap_or(&Value::Null), delta);
    let p = json!({"status": status});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&p))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_only_the_last_errors_stay() {
        let current = json!({"successMessages": 5, "failMessages": 1, "errors": (0..9).map(|i| format!("old {i}")).collect::<Vec<_>>()});
        let d = Delta {
            ok: 2,
            fail: 3,
            errors: vec!["new 1".into(), "new 2".into()],
            effect: None,
        };
        let s = merged(&current, &d);
        assert_eq!(s["successMessages"], 7);
        assert_eq!(s["failMessages"], 4);
        let errors = s["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), KEEP_ERRORS);
        assert_eq!(errors[0], "old 1");
        assert_eq!(errors[9], "new 2");
        assert_eq!(
            merged(&Value::Null, &Delta::default())["successMessages"],
            0
        );
    }

    #[test]
    fn the_ready_condition_says_whether_and_why() {
        let waiting = Effect::Waiting("rule endpoint e does not exist".into());
        let d = Delta {
            effect: Some(waiting.clone()),
            ..Delta::default()
        };
        let s = merged(&json!({"successMessages": 1}), &d);
        assert_eq!(s["successMessages"], 1, "counts kept");
        let c = &s["conditions"][0];
        assert_eq!(
            (
                c["type"].as_str(),
                c["status"].as_str(),
                c["reason"].as_str()
            ),
            (Some("Ready"), Some("False"), Some("EndpointMissing"))
        );
        assert!(waiting.shown_in(&s));
        assert!(!Effect::InEffect.shown_in(&s));
        // Counting goes on without touching the condition.
        let s2 = merged(
            &s,
            &Delta {
                ok: 1,
                ..Delta::default()
            },
        );
        assert_eq!(s2["conditions"], s["conditions"]);
        let s3 = merged(
            &s2,
            &Delta {
                effect: Some(Effect::InEffect),
                ..Delta::default()
            },
        );
        assert_eq!(s3["conditions"][0]["status"], "True");
        assert!(Effect::InEffect.shown_in(&s3));
        let refused = Effect::of(Err(&kedge_core::rule::RuleError::Missing("path")));
        assert!(matches!(refused, Effect::Refused(_)));
    }
}
