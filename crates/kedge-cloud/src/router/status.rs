//! Rule status, under `status` (KubeEdge patches these keys at the top level, where the schema
//! prunes them, so its counters never persist): `successMessages`, `failMessages`, and the last
//! 10 errors, each prefixed with its time. Counted in memory and written once a second per rule
//! that changed, so a busy rule costs one write a second, not one per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

/// Errors kept per rule.
pub const KEEP_ERRORS: usize = 10;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delta {
    pub ok: u64,
    pub fail: u64,
    pub errors: Vec<String>,
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
    json!({"successMessages": n("successMessages") + delta.ok, "failMessages": n("failMessages") + delta.fail, "errors": errors})
}

impl RuleStats {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Delta>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn success(&self, rule: &str) {
        self.pending().entry(rule.to_string()).or_default().ok += 1;
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

    /// Writes what changed, every second, for as long as the cloud runs.
    pub async fn flush_loop(self: Arc<Self>, client: kube::Client) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let batch = std::mem::take(&mut *self.pending());
            for (rule, delta) in batch {
                if let Err(e) = write(&client, &rule, &delta).await {
                    tracing::debug!(rule, error = %e, "rule status not written");
                }
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
}
