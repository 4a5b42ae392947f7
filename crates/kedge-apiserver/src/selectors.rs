//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`), parsed once per request.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(String);

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{whole}: expected a set of values in (...)")))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_label_req(part: &str) -> Result<LabelReq, SelectorError> {
    let key_ok = |k: &str| !k.is_empty() && !k.contains(char::is_whitespace);
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return key_ok(key)
            .then(|| LabelReq::NotExists(key.into()))
            .ok_or_else(|| SelectorError(part.into()));
    }
    for (op, neg) in [(" notin ", true), (" in ", false)] {
        if let Some(i) = part.find(op) {
            let key = part[..i].trim();
            let vals = set_values(&part[i + op.len()..], part)?;
            if !key_ok(key) {
                return Err(SelectorError(part.into()));
            }
            return Ok(if neg {
                LabelReq::NotIn(key.into(), vals)
            } else {
                LabelReq::In(key.into(), vals)
            });
        }
    }
    match split_op(part) {
        Some((k, "!=", v)) => Ok(LabelReq::NotEq(k.into(), v.into())),
        Some((k, _, v)) => Ok(LabelReq::Eq(k.into(), v.into())),
        None if key_ok(part) => Ok(LabelReq::Exists(part.into())),
        None => Err(SelectorError(part.into())),
    }
}

/// Splits `k op v` for op in `!=`, `==`, `=`.
fn split_op(part: &str) -> Option<(&str, &'static str, &str)> {
    for op in ["!=", "==", "="] {
        if let Some(i) = part.find(op) {
            return Some((part[..i].trim(), op, part[i + op.len()..].trim()));
        }
    }
    None
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        split_top(s)
            .into_iter()
            .map(parse_label_req)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::NotEq(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-separated. Any
/// dotted path into the object is accepted (real servers allow a per-kind subset); a missing
/// field compares as the empty string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        split_top(s)
            .into_iter()
            .map(|part| match split_op(part) {
                Some((k, op, v)) if !k.is_empty() => Ok((
                    k.split('.').map(String::from).collect(),
                    op == "!=",
                    v.to_string(),
                )),
                _ => Err(SelectorError(part.into())),
            })
            .collect::<Result<_, _>>()
            .map(FieldSelector)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every requirement reads only `metadata.name` / `metadata.namespace`.
    pub fn only_metadata(&self) -> bool {
        self.0.iter().all(|(path, _, _)| {
            path.len() == 2
                && path[0] == "metadata"
                && (path[1] == "name" || path[1] == "namespace")
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, negate, want)| {
            let got = path
                .iter()
                .try_fold(obj, |v, seg| v.get(seg))
                .map(scalar_string)
                .unwrap_or_default();
            (got == *want) != *negate
        })
    }

    /// Matches using only the name and namespace (see [`FieldSelector::only_metadata`]).
    pub fn matches_meta(&self, namespace: &str, name: &str) -> bool {
        self.0.iter().all(|(path, negate, want)| {
            let got = if path[1] == "name" { name } else { namespace };
            (got == want) != *negate
        })
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_equality_sets_and_existence() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        let m = |s: &str| LabelSelector::parse(s).expect(s).matches(&l);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db),tier notin (be)"));
        assert!(!m("app notin (web)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m(""));
    }

    #[test]
    fn label_garbage_is_an_error() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors_read_any_path() {
        let obj = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let m = |s: &str| FieldSelector::parse(s).expect(s).matches(&obj);
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName=n1,status.phase!=Failed"));
        assert!(!m("metadata.name=q"));
        assert!(m("spec.missing="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn metadata_only_field_selectors_skip_parsing() {
        let f =
            FieldSelector::parse("metadata.name=a,metadata.namespace!=kube-system").expect("ok");
        assert!(f.only_metadata());
        assert!(f.matches_meta("default", "a"));
        assert!(!f.matches_meta("kube-system", "a"));
    }
}
