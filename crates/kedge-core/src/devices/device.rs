//! Device: v1alpha2 ↔ v1beta1.

use serde_json::{Map, Value, json};

use super::stash::{self, entry, original};
use super::{STASH_V1ALPHA2, STASH_V1BETA1};

/// v1alpha2 protocol and visitor keys that name their protocol.
const NAMED: [&str; 3] = ["modbus", "opcua", "bluetooth"];
/// v1beta1 property keys v1alpha2 also holds (in `status.twins` and `spec.propertyVisitors`).
const SHARED: [&str; 5] = ["name", "desired", "visitors", "reportCycle", "collectCycle"];
/// v1beta1 spec keys with no v1alpha2 form.
const BETA_SPEC: [&str; 2] = ["methods", "stateReport"];
/// v1beta1 (deprecated) status keys with no v1alpha2 form.
const BETA_STATUS: [&str; 2] = ["reportToCloud", "reportCycle"];

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

fn array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

fn name_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The v1alpha2 selector KubeEdge reads a node from (one term, one expression).
fn selector_for(node: &Value) -> Value {
    json!({"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "", "operator": "In", "values": [node]}]}]})
}

/// v1alpha2 `spec.protocol` → v1beta1: the protocol named by its one key, settings flat in
/// `configData` (`common`'s nested settings as dotted keys, customized values merged).
fn protocol_up(p: &Value) -> Value {
    let mut name = p.get("protocolName").cloned();
    let mut data = object(p.get("configData"));
    if let Some(c) = p.get("customizedProtocol") {
        name = name.or_else(|| c.get("protocolName").cloned());
        data.extend(object(c.get("configData")));
    }
    for key in NAMED {
        if let Some(cfg) = p.get(key).and_then(Value::as_object) {
            name.get_or_insert_with(|| json!(key));
            data.extend(cfg.clone());
        }
    }
    if let Some(common) = p.get("common").and_then(Value::as_object) {
        let mut common = common.clone();
        data.extend(object(common.remove("customizedValues").as_ref()));
        flatten("", &common, &mut data);
    }
    let mut out = Map::new();
    if let Some(n) = name {
        out.insert("protocolName".into(), n);
    }
    if !data.is_empty() {
        out.insert("configData".into(), Value::Object(data));
    }
    Value::Object(out)
}

fn flatten(prefix: &str, m: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (k, v) in m {
        let key = format!("{prefix}{k}");
        match v {
            Value::Object(inner) => flatten(&format!("{key}."), inner, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// v1beta1 `{protocolName, configData}` → the v1alpha2 form of a protocol or visitor.
fn named_down(v: &Value) -> Value {
    let name = v.get("protocolName").cloned();
    let data = v.get("configData").cloned().unwrap_or_else(|| json!({}));
    match name.as_ref().and_then(Value::as_str) {
        Some(n) if NAMED.contains(&n) => json!({n: data}),
        None if v.get("configData").is_none() => json!({}),
        _ => json!({"customizedProtocol": {"protocolName": name, "configData": data}}),
    }
}

/// One v1alpha2 property visitor's access settings as v1beta1 `visitors`.
fn visitor_up(pv: &Value) -> Option<Value> {
    let mut v = match pv.get("customizedProtocol") {
        Some(c) => protocol_up(&json!({"customizedProtocol": c})),
        None => {
            let key = NAMED.iter().find(|k| pv.get(**k).is_some())?;
            protocol_up(&json!({*key: pv[*key]}))
        }
    };
    if let Some(extra) = pv.get("customizedValues").and_then(Value::as_object) {
        let data = v["configData"].as_object().cloned().unwrap_or_default();
        let mut merged = extra.clone();
        merged.extend(data);
        v["configData"] = Value::Object(merged);
    }
    Some(v)
}

/// What of each v1beta1 property v1alpha2 keeps in `propertyVisitors`.
fn visitors_view(props: &[Value]) -> Value {
    let view = props.iter().filter_map(|p| {
        let mut m = Map::new();
        for k in ["reportCycle", "collectCycle", "visitors"] {
            if let Some(v) = p.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        (!m.is_empty()).then(|| {
            m.insert("name".into(), json!(name_of(p, "name")));
            Value::Object(m)
        })
    });
    Value::Array(view.collect())
}

fn visitors_down(view: &Value) -> Value {
    let pvs = view.as_array().into_iter().flatten().map(|p| {
        let mut m = match p.get("visitors") {
            Some(v) => object(Some(&named_down(v))),
            None => Map::new(),
        };
        m.insert("propertyName".into(), json!(name_of(p, "name")));
        for k in ["reportCycle", "collectCycle"] {
            if let Some(v) = p.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        Value::Object(m)
    });
    Value::Array(pvs.collect())
}

/// The index of property `name` in `props`, added when missing.
fn property<'a>(props: &'a mut Vec<Map<String, Value>>, name: &str) -> &'a mut Map<String, Value> {
    let i = match props.iter().position(|p| name_of_map(p) == name) {
        Some(i) => i,
        None => {
            props.push(Map::from_iter([("name".to_string(), json!(name))]));
            props.len() - 1
        }
    };
    &mut props[i]
}

fn name_of_map(p: &Map<String, Value>) -> &str {
    p.get("name").and_then(Value::as_str).unwrap_or("")
}

/// v1beta1 `spec.properties` from v1alpha2 desired twins and property visitors (twins' order
/// first).
fn properties_up(twins: &[Value], pvs: &[Value]) -> Vec<Map<String, Value>> {
    let mut props = Vec::new();
    for t in twins {
        if let Some(d) = t.get("desired") {
            property(&mut props, name_of(t, "propertyName")).insert("desired".into(), d.clone());
        }
    }
    for pv in pvs {
        let p = property(&mut props, name_of(pv, "propertyName"));
        for k in ["reportCycle", "collectCycle"] {
            if let Some(v) = pv.get(k) {
                p.insert(k.into(), v.clone());
            }
        }
        if let Some(v) = visitor_up(pv) {
            p.insert("visitors".into(), v);
        }
    }
    props
}

/// The v1beta1-only fields a v1alpha2 object carried in its stash, put back.
fn restore_beta(
    beta: &Map<String, Value>,
    spec: &mut Map<String, Value>,
    status: &mut Map<String, Value>,
    props: &mut Vec<Map<String, Value>>,
) {
    for k in BETA_SPEC {
        if let Some(v) = beta.get(k) {
            spec.insert(k.into(), v.clone());
        }
    }
    status.extend(object(beta.get("status")));
    for (name, extra) in object(beta.get("properties")) {
        property(props, &name).extend(object(Some(&extra)));
    }
    let order = array(beta.get("order"));
    let rank = |p: &Map<String, Value>| {
        let n = name_of_map(p);
        order.iter().position(|o| o == n).unwrap_or(usize::MAX)
    };
    props.sort_by_key(rank);
}

/// v1alpha2 → v1beta1.
pub fn up(old: &Value) -> Value {
    let mut out = old.clone();
    let beta = stash::read(old, STASH_V1BETA1);
    stash::remove(&mut out, STASH_V1BETA1);
    let spec_old = object(old.get("spec"));
    let twins = array(old.pointer("/status/twins"));
    let mut spec = Map::new();
    let mut keep = Map::new();
    if let Some(r) = spec_old.get("deviceModelRef") {
        spec.insert("deviceModelRef".into(), r.clone());
    }
    if let Some(sel) = spec_old.get("nodeSelector") {
        let node = sel
            .pointer("/nodeSelectorTerms/0/matchExpressions/0/values/0")
            .cloned()
            .unwrap_or(Value::Null);
        if node.is_string() {
            spec.insert("nodeName".into(), node.clone());
        }
        if selector_for(&node) != *sel {
            keep.insert("nodeSelector".into(), entry(sel, &node));
        }
    }
    if let Some(p) = spec_old.get("protocol") {
        let np = protocol_up(p);
        if named_down(&np) != *p {
            keep.insert("protocol".into(), entry(p, &np));
        }
        spec.insert("protocol".into(), np);
    }
    let pvs = array(spec_old.get("propertyVisitors"));
    let mut props = properties_up(&twins, &pvs);
    let mut status = object(old.get("status"));
    restore_beta(&beta, &mut spec, &mut status, &mut props);
    let props: Vec<Value> = props.into_iter().map(Value::Object).collect();
    if let Some(pv) = spec_old.get("propertyVisitors") {
        let view = visitors_view(&props);
        if visitors_down(&view) != *pv {
            keep.insert("propertyVisitors".into(), entry(pv, &view));
        }
    }
    if let Some(d) = spec_old.get("data") {
        keep.insert("data".into(), entry(d, &Value::Null));
    }
    if !props.is_empty() {
        spec.insert("properties".into(), Value::Array(props));
    }
    // Reported values stay in the Device's status (v1beta1 keeps unknown status fields).
    let reported: Vec<Value> = twins
        .iter()
        .filter_map(|t| {
            let r = t.get("reported")?;
            Some(json!({"propertyName": name_of(t, "propertyName"), "reported": r}))
        })
        .collect();
    status.remove("twins");
    if !reported.is_empty() {
        status.insert("twins".into(), Value::Array(reported));
    }
    out["spec"] = Value::Object(spec);
    set_status(&mut out, status);
    stash::write(&mut out, STASH_V1ALPHA2, keep, true);
    out
}

/// Sets `status`, leaving out an empty one.
fn set_status(out: &mut Value, status: Map<String, Value>) {
    if status.is_empty() {
        if let Some(m) = out.as_object_mut() {
            m.remove("status");
        }
    } else {
        out["status"] = Value::Object(status);
    }
}

/// v1beta1 properties and stored reported values → v1alpha2 `status.twins`.
fn twins_down(props: &[Value], stored: &[Value]) -> Vec<Value> {
    let reported = |name: &str| {
        stored
            .iter()
            .find(|t| name_of(t, "propertyName") == name)
            .and_then(|t| t.get("reported"))
    };
    let mut twins: Vec<Value> = props
        .iter()
        .filter_map(|p| {
            let name = name_of(p, "name");
            let mut t = Map::from_iter([("propertyName".to_string(), json!(name))]);
            if let Some(d) = p.get("desired") {
                t.insert("desired".into(), d.clone());
            }
            if let Some(r) = reported(name) {
                t.insert("reported".into(), r.clone());
            }
            (t.len() > 1).then_some(Value::Object(t))
        })
        .collect();
    let listed = |n: &str| props.iter().any(|p| name_of(p, "name") == n);
    twins.extend(
        stored
            .iter()
            .filter(|t| !listed(name_of(t, "propertyName")))
            .cloned(),
    );
    twins
}

/// The v1beta1-only fields of `spec`, `status` and each property, for the v1alpha2 stash.
fn beta_only(
    spec: &Map<String, Value>,
    status: &mut Map<String, Value>,
    props: &[Value],
) -> Map<String, Value> {
    let mut beta = Map::new();
    for k in BETA_SPEC {
        if let Some(v) = spec.get(k) {
            beta.insert(k.into(), v.clone());
        }
    }
    let st: Map<String, Value> = BETA_STATUS
        .iter()
        .filter_map(|k| Some((k.to_string(), status.remove(*k)?)))
        .collect();
    if !st.is_empty() {
        beta.insert("status".into(), Value::Object(st));
    }
    let mut extras = Map::new();
    for p in props {
        let extra: Map<String, Value> = object(Some(p))
            .into_iter()
            .filter(|(k, _)| !SHARED.contains(&k.as_str()))
            .collect();
        if !extra.is_empty() {
            extras.insert(name_of(p, "name").to_string(), Value::Object(extra));
        }
    }
    if !extras.is_empty() {
        beta.insert("properties".into(), Value::Object(extras));
    }
    if !props.is_empty() {
        let order = props.iter().map(|p| json!(name_of(p, "name"))).collect();
        beta.insert("order".into(), Value::Array(order));
    }
    beta
}

/// v1beta1 → v1alpha2.
pub fn down(new: &Value) -> Value {
    let mut out = new.clone();
    let keep = stash::read(new, STASH_V1ALPHA2);
    stash::remove(&mut out, STASH_V1ALPHA2);
    let spec_new = object(new.get("spec"));
    let props = array(spec_new.get("properties"));
    let mut status = object(new.get("status"));
    let mut spec = Map::new();
    if let Some(r) = spec_new.get("deviceModelRef") {
        spec.insert("deviceModelRef".into(), r.clone());
    }
    let node = spec_new.get("nodeName").cloned().unwrap_or(Value::Null);
    match original(&keep, "nodeSelector", &node) {
        Some(sel) => {
            spec.insert("nodeSelector".into(), sel.clone());
        }
        None if node.as_str().is_some_and(|n| !n.is_empty()) => {
            spec.insert("nodeSelector".into(), selector_for(&node));
        }
        None => {}
    }
    if let Some(np) = spec_new.get("protocol") {
        let p = original(&keep, "protocol", np).cloned();
        spec.insert("protocol".into(), p.unwrap_or_else(|| named_down(np)));
    }
    let view = visitors_view(&props);
    let pvs = original(&keep, "propertyVisitors", &view).cloned();
    let pvs = pvs.unwrap_or_else(|| visitors_down(&view));
    if pvs.as_array().is_some_and(|a| !a.is_empty()) || keep.contains_key("propertyVisitors") {
        spec.insert("propertyVisitors".into(), pvs);
    }
    if let Some(d) = original(&keep, "data", &Value::Null) {
        spec.insert("data".into(), d.clone());
    }
    let beta = beta_only(&spec_new, &mut status, &props);
    let twins = twins_down(&props, &array(status.get("twins")));
    status.remove("twins");
    if !twins.is_empty() {
        status.insert("twins".into(), Value::Array(twins));
    }
    out["spec"] = Value::Object(spec);
    set_status(&mut out, status);
    stash::write(&mut out, STASH_V1BETA1, beta, false);
    out
}
