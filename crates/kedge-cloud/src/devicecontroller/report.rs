//! Edge reports applied to Devices: `reported` twin values (never `desired`: the write carries
//! the Device's resourceVersion and is retried on a conflict), and the device state. Only the
//! node the Device is bound to may report it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kedge_core::twin::{self, TwinError, device};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::device_resource;

/// What an edge reports about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `device/<ns>/<name>/twin/edge_updated`
    Twin,
    /// `device/<ns>/<name>/state/update`
    State,
}

/// A device report's target, from its resource string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceReport<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub what: Report,
}

/// Parses `device/<ns>/<name>/twin/edge_updated` and `device/<ns>/<name>/state/update`.
pub fn parse(resource: &str) -> Option<DeviceReport<'_>> {
    let rest = resource.strip_prefix("device/")?;
    let mut parts = rest.splitn(3, '/');
    let (namespace, name, tail) = (parts.next()?, parts.next()?, parts.next()?);
    let what = match tail {
        "twin/edge_updated" => Report::Twin,
        "state/update" => Report::State,
        _ => return None,
    };
    let ok = |s: &str| kedge_core::names::is_dns_subdomain(s);
    (ok(namespace) && ok(name)).then_some(DeviceReport {
        namespace,
        name,
        what,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("device {0} does not exist")]
    Gone(String),
    #[error("device {device} is not bound to node {node}")]
    NotBound { device: String, node: String },
    #[error(transparent)]
    Content(#[from] TwinError),
    #[error("device {0} kept changing; the report will be re-sent")]
    Conflict(String),
    #[error("Kubernetes API: {}", crate::objects::brief(.0))]
    Kube(#[from] kube::Error),
}

/// Whether Devices have a status subresource in this cluster: 0 unknown, 1 yes, 2 no.
static STATUS_SUBRESOURCE: AtomicU8 = AtomicU8::new(0);

/// Merge-patches a Device's status: through the status subresource where the cluster has one.
pub(crate) async fn patch(
    api: &Api<DynamicObject>,
    name: &str,
    p: &Value,
) -> Result<(), kube::Error> {
    let pp = PatchParams::default();
    if STATUS_SUBRESOURCE.load(Ordering::Relaxed) != 2 {
        match api.patch_status(name, &pp, &Patch::Merge(p)).await {
            Ok(_) => {
                STATUS_SUBRESOURCE.store(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(kube::Error::Api(s))
                if s.code == 404 && STATUS_SUBRESOURCE.load(Ordering::Relaxed) == 0 =>
            {
                STATUS_SUBRESOURCE.store(2, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    api.patch(name, &pp, &Patch::Merge(p)).await.map(|_| ())
}

/// The state report's device: KubeEdge sends the content as a JSON string.
fn state_of(content: &Value) -> Result<(String, String), TwinError> {
    let v = match content {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| TwinError::BadRequest(format!("state report: {e}")))?,
        other => other.clone(),
    };
    let state = v.pointer("/device/state").and_then(Value::as_str);
    let online = v
        .pointer("/device/lastOnlineTime")
        .and_then(Value::as_str)
        .unwrap_or("");
    match state {
        Some(s) => Ok((s.to_string(), online.to_string())),
        None => Err(TwinError::BadRequest(
            "a state report has device.state".into(),
        )),
    }
}

/// Applies `content` reported by `node` about `r`. `cached` is the Device as the controller's
/// watch last saw it: tried first, which saves a read; a stale copy only costs a conflict,
/// after which the Device is read afresh.
pub async fn apply(
    client: &kube::Client,
    cached: Option<Arc<DynamicObject>>,
    node: &str,
    r: DeviceReport<'_>,
    content: &Value,
) -> Result<(), ReportError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), r.namespace, &device_resource());
    let id = format!("{}/{}", r.namespace, r.name);
    let mut cached = cached;
    for _ in 0..5 {
        let d = match cached.take() {
            Some(d) => d,
            None => Arc::new(
                api.get_opt(r.name)
                    .await?
                    .ok_or_else(|| ReportError::Gone(id.clone()))?,
            ),
        };
        if device::node_of(&d.data) != Some(node) {
            return Err(ReportError::NotBound {
                device: id,
                node: node.into(),
            });
        }
        let p = match r.what {
            Report::State => {
                let (state, online) = state_of(content)?;
                let mut status = json!({"state": state});
                if !online.is_empty() {
                    status["lastOnlineTime"] = json!(online);
                }
                json!({"status": status})
            }
            Report::Twin => {
                let twins = d
                    .data
                    .pointer("/status/twins")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let Some(next) = twin::report::apply(&twins, content)? else {
                    return Ok(());
                };
                // The resourceVersion makes this a compare-and-swap: a desired value written
                // meanwhile is a conflict, and the report is re-applied on the fresh object.
                json!({"metadata": {"resourceVersion": d.metadata.resource_version}, "status": {"twins": next}})
            }
        };
        match patch(&api, r.name, &p).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ReportError::Conflict(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_resources_parse() {
        assert_eq!(
            parse("device/default/counter/twin/edge_updated"),
            Some(DeviceReport {
                namespace: "default",
                name: "counter",
                what: Report::Twin
            })
        );
        assert_eq!(
            parse("device/default/counter/state/update").map(|r| r.what),
            Some(Report::State)
        );
        for bad in [
            "device/counter/twin/edge_updated",
            "device/default/counter/twin/x",
            "default/device/counter",
            "device/Bad_NS/c/state/update",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn state_reports_come_as_strings_or_objects() {
        let s = json!(
            "{\"device\":{\"name\":\"counter\",\"state\":\"online\",\"lastOnlineTime\":\"t\"}}"
        );
        assert_eq!(
            state_of(&s).expect("ok"),
            ("online".to_string(), "t".to_string())
        );
        let o = json!({"device": {"state": "offline"}});
        assert_eq!(state_of(&o).expect("ok").0, "offline");
        assert!(state_of(&json!("nope")).is_err());
    }
}
