//! Kubernetes' `LabelSelector` (`matchLabels` and `matchExpressions`), read from an object's
//! JSON: which labels it selects, and its string form (`app=web,tier in (a,b)`) as the API shows
//! it in a Scale's `status.selector` and as clients send it in `labelSelector`.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector. An empty one selects everything (`matchLabels: {}`), as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("{0:?} is not a valid label selector operator")]
    Operator(String),
    #[error(
        "the values of {0:?} must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
    )]
    Values(String),
}

impl Selector {
    /// Reads a `LabelSelector` object (`None`/null: selects everything).
    pub fn from_json(v: &Value) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                let val = val.as_str().unwrap_or_default().to_string();
                reqs.push(Requirement::In(k.clone(), vec![val]));
            }
        }
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let mut values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            values.sort();
            let op = e["operator"].as_str().unwrap_or_default();
            let needs_values = matches!(op, "In" | "NotIn");
            if needs_values == values.is_empty()
                && matches!(op, "In" | "NotIn" | "Exists" | "DoesNotExist")
            {
                return Err(SelectorError::Values(key));
            }
            reqs.push(match op {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(SelectorError::Operator(other.to_string())),
            });
        }
        Ok(Selector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether it selects an object whose `metadata.labels` is `labels` (JSON).
    pub fn matches_json(&self, labels: &Value) -> bool {
        self.matches(&label_map(labels))
    }
}

/// `metadata.labels` as a map (missing: empty).
pub fn label_map(labels: &Value) -> BTreeMap<String, String> {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl std::fmt::Display for Selector {
    /// Kubernetes' string form, requirements sorted by key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<(String, String)> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::In(k, vs) if vs.len() == 1 => (k.clone(), format!("{k}={}", vs[0])),
                Requirement::In(k, vs) => (k.clone(), format!("{k} in ({})", vs.join(","))),
                Requirement::NotIn(k, vs) => (k.clone(), format!("{k} notin ({})", vs.join(","))),
                Requirement::Exists(k) => (k.clone(), k.clone()),
                Requirement::DoesNotExist(k) => (k.clone(), format!("!{k}")),
            })
            .collect();
        parts.sort();
        let s: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
        f.write_str(&s.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_expressions_select_and_print_like_kubernetes() {
        let s = Selector::from_json(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]}))
        .expect("valid");
        assert_eq!(s.to_string(), "app=web,!canary,tier in (a,b)");
        assert!(s.matches_json(&json!({"app": "web", "tier": "a"})));
        assert!(!s.matches_json(&json!({"app": "web", "tier": "c"})));
        assert!(!s.matches_json(&json!({"app": "web", "tier": "a", "canary": "1"})));
        assert!(
            Selector::default().matches_json(&json!({"x": "y"})),
            "empty selects all"
        );
    }

    #[test]
    fn bad_operators_and_values_are_errors() {
        let bad = json!({"matchExpressions": [{"key": "k", "operator": "Like", "values": ["a"]}]});
        assert_eq!(
            Selector::from_json(&bad),
            Err(SelectorError::Operator("Like".into()))
        );
        let empty = json!({"matchExpressions": [{"key": "k", "operator": "In", "values": []}]});
        assert_eq!(
            Selector::from_json(&empty),
            Err(SelectorError::Values("k".into()))
        );
    }
}
