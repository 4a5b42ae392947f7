//! Edge reports applied to DeviceStatus (and to the Devices used through v1alpha2): `reported`
//! twin values (the write carries the object's resourceVersion and is retried on a conflict),
//! and the device state. Only the node the Device is bound to may report it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kedge_core::twin::report::Target;
use kedge_core::twin::{self, TwinError, device};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::status::{self, status_resource};
use super::{device_resource, ready};

/// What an edge reports about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `device/<ns>/<name>/twin/edge_updated`
    Twin,
    /// `device/<ns>/<name>/state/update`
    State,
    /// `device/<ns>/<name>/mapper` (kedge): whether the device's DMI mapper has it, or why not.
    Mapper,
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
        "mapper" => Report::Mapper,
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

/// Applies `content` reported by `node` about `r`: to the DeviceStatus, and to the Device's own
/// status when it is used through v1alpha2. `cached` and `cached_status` are the objects as the
/// controller's watches last saw them: tried first, which saves a read; a stale copy only costs
/// a conflict, after which the object is read afresh.
pub async fn apply(
    client: &kube::Client,
    (cached, cached_status): (Option<Arc<DynamicObject>>, Option<Arc<DynamicObject>>),
    node: &str,
    r: DeviceReport<'_>,
    content: &Value,
) -> Result<(), ReportError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), r.namespace, &device_resource());
    let id = format!("{}/{}", r.namespace, r.name);
    let d = match cached {
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
    if r.what == Report::Mapper {
        return mapped(&api, d, r.name, content).await;
    }
    let statuses: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), r.namespace, &status_resource());
    let on_status = Twins {
        api: &statuses,
        name: r.name,
        target: Target::DeviceStatus,
    };
    let mut missing = false;
    let mut first = cached_status;
    for _ in 0..5 {
        match on_status.write(first.take(), r, content).await {
            Err(ReportError::Gone(_)) if !missing => {
                missing = true;
                status::create(client, &d).await?;
            }
            other => {
                other?;
                break;
            }
        }
    }
    let v1alpha2 = d
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(kedge_core::devices::STASH_V1ALPHA2));
    if v1alpha2 {
        let on_device = Twins {
            api: &api,
            name: r.name,
            target: Target::Device,
        };
        on_device.write(Some(d), r, content).await?;
    }
    Ok(())
}

/// The Device's `Mapped` condition, from the edge's report (a conflict is retried on the
/// fresh Device).
async fn mapped(
    api: &Api<DynamicObject>,
    d: Arc<DynamicObject>,
    name: &str,
    content: &Value,
) -> Result<(), ReportError> {
    let mut d = d;
    for _ in 0..5 {
        let Some(c) = ready::mapped(&d.data, content) else {
            return Ok(());
        };
        let p = json!({"metadata": {"resourceVersion": d.metadata.resource_version},
            "status": {"conditions": ready::with(&d.data, c)}});
        match patch(api, name, &p).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let fresh = api.get_opt(name).await?;
                d = Arc::new(fresh.ok_or_else(|| ReportError::Gone(name.to_string()))?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ReportError::Conflict(name.to_string()))
}

/// The object a report is written to.
struct Twins<'a> {
    api: &'a Api<DynamicObject>,
    name: &'a str,
    target: Target,
}

impl Twins<'_> {
    async fn write(
        &self,
        first: Option<Arc<DynamicObject>>,
        r: DeviceReport<'_>,
        content: &Value,
    ) -> Result<(), ReportError> {
        let id = format!("{}/{}", r.namespace, r.name);
        let mut first = first;
        for _ in 0..5 {
            let o = match first.take() {
                Some(o) => o,
                None => Arc::new(
                    self.api
                        .get_opt(self.name)
                        .await?
                        .ok_or_else(|| ReportError::Gone(id.clone()))?,
                ),
            };
            let p = match r.what {
                Report::State => state_patch(content)?,
                Report::Mapper => return Ok(()),
                Report::Twin => {
                    let twins = o
                        .data
                        .pointer("/status/twins")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let Some(next) = twin::report::apply(&twins, content, self.target)? else {
                        return Ok(());
                    };
                    // The resourceVersion makes this a compare-and-swap: a twin list written
                    // meanwhile is a conflict, and the report is re-applied on the fresh object.
                    json!({"metadata": {"resourceVersion": o.metadata.resource_version},
                        "status": {"twins": next}})
                }
            };
            let written = match self.target {
                Target::Device => patch(self.api, self.name, &p).await,
                // No status subresource on DeviceStatus (as KubeEdge's CRD).
                Target::DeviceStatus => self
                    .api
                    .patch(self.name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => return Err(ReportError::Gone(id)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ReportError::Conflict(id))
    }
}

/// `{status: {state, lastOnlineTime}}` of a state report (an empty time left out, so the last
/// online time stays).
fn state_patch(content: &Value) -> Result<Value, TwinError> {
    let (state, online) = state_of(content)?;
    let mut status = json!({"state": state});
    if !online.is_empty() {
        status["lastOnlineTime"] = json!(online);
    }
    Ok(json!({"status": status}))
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
