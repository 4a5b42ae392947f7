//! Pod templates compared and named as Kubernetes does: the label a controller adds to its pods'
//! templates (`pod-template-hash`, `controller-revision-hash`) aside, and zero values alike.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label DaemonSets and StatefulSets put on their pods: the template's hash.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The labels controllers add to templates to tell revisions apart.
pub const HASH_LABELS: [&str; 2] = ["pod-template-hash", REVISION_LABEL];

/// The template revision a pod of a DaemonSet or StatefulSet runs (empty: none).
pub fn revision_of(p: &k8s_openapi::api::core::v1::Pod) -> &str {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// The template without the hash label and without zero values (how a ReplicaSet's template
/// is compared: as Kubernetes compares Go structs, `false`, `0`, `""` and absent are alike, and
/// clients differ in which they send).
pub fn unhashed(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        HASH_LABELS.iter().for_each(|h| {
            l.remove(*h);
        });
        if l.is_empty() {
            m.labels = None;
        }
    }
    let mut v = serde_json::to_value(&t).unwrap_or_default();
    prune(&mut v);
    v
}

/// Removes zero values (`null`, `false`, `0`, `""`, `{}`, `[]`) from objects, deepest first.
pub fn prune(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !prune(x));
            m.is_empty()
        }
        Value::Array(a) => {
            a.iter_mut().for_each(|x| {
                prune(x);
            });
            a.is_empty()
        }
        Value::Null => true,
        Value::Bool(b) => !*b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
    }
}

/// The template's hash as a name suffix (FNV-1a of its JSON, digits mapped onto Kubernetes'
/// consonant-and-digit alphabet so that no word is spelt).
pub fn template_hash(t: &PodTemplateSpec, collisions: i32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let text = format!("{}{collisions}", unhashed(t));
    let mut h: u32 = 0x811c9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}
