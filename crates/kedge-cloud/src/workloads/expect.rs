//! What a controller just created and deleted, until its pod cache shows it (Kubernetes'
//! "expectations"): acting again on a cache that does not yet show the last action would
//! create or delete twice. Forgotten after a deadline, in case an event was missed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::runtime::Key;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pending {
    created: Vec<String>,
    deleted: Vec<String>,
    at: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations(HashMap<Key, Pending>);

impl Expectations {
    pub fn created(&mut self, key: &Key, names: Vec<String>, now: Instant) {
        let p = self.0.entry(key.clone()).or_default();
        p.created.extend(names);
        p.at = Some(now);
    }

    pub fn deleted(&mut self, key: &Key, names: Vec<String>, now: Instant) {
        let p = self.0.entry(key.clone()).or_default();
        p.deleted.extend(names);
        p.at = Some(now);
    }

    /// Whether anything done for `key` is still to be seen.
    pub fn waiting(&self, key: &Key) -> bool {
        self.0.contains_key(key)
    }

    pub fn forget(&mut self, key: &Key) {
        self.0.remove(key);
    }

    /// Whether the cache (`pods`: by name, whether it is still active) shows everything done
    /// for `key`; when it does, or past the deadline, the expectations go.
    pub fn met(&mut self, key: &Key, pods: &HashMap<String, bool>, now: Instant) -> bool {
        let Some(p) = self.0.get(key) else {
            return true;
        };
        let seen = |n: &String| pods.contains_key(n);
        let active = |n: &String| pods.get(n) == Some(&true);
        let done = p.created.iter().all(seen) && !p.deleted.iter().any(active);
        let expired = p.at.is_some_and(|t| now.duration_since(t) > DEADLINE);
        if done || expired {
            self.0.remove(key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_wait_until_the_cache_shows_them() {
        let mut e = Expectations::default();
        let k = ("default".to_string(), "rs".to_string());
        let t = Instant::now();
        let pods = |v: &[(&str, bool)]| -> HashMap<String, bool> {
            v.iter().map(|(n, a)| (n.to_string(), *a)).collect()
        };
        assert!(e.met(&k, &pods(&[]), t));
        e.created(&k, vec!["a".into()], t);
        assert!(!e.met(&k, &pods(&[]), t), "created pod not seen yet");
        assert!(e.met(&k, &pods(&[("a", true)]), t));
        e.deleted(&k, vec!["a".into()], t);
        assert!(!e.met(&k, &pods(&[("a", true)]), t), "still active");
        assert!(e.met(&k, &pods(&[("a", false)]), t), "marked for deletion");
        e.created(&k, vec!["b".into()], t);
        assert!(
            e.met(&k, &pods(&[]), t + DEADLINE + Duration::from_secs(1)),
            "expired"
        );
    }
}
