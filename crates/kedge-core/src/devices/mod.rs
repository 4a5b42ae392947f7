//! `devices.kubeedge.io` served in two versions from one stored form: v1alpha2 (the seed's) and
//! v1beta1 (KubeEdge v1.15 and later, and the stored version, as in KubeEdge). The conversion
//! is real both ways ([`convert`]): a v1alpha2 Device's desired twins become v1beta1
//! `spec.properties[].desired`, its `nodeSelector` becomes `nodeName`, and so on (the table is
//! in `docs/devices.md`).
//!
//! What one version cannot hold is kept in an annotation of the other ([`STASH_V1ALPHA2`] on a
//! v1beta1 object, [`STASH_V1BETA1`] on a v1alpha2 one), so an object written in one version and
//! read in the other comes back exactly as written. A stashed field is used again only while
//! the fields derived from it are unchanged: an edit in the other version wins.

mod device;
mod model;
mod stash;

use serde_json::Value;

pub const GROUP: &str = "devices.kubeedge.io";
pub const V1ALPHA2: &str = "v1alpha2";
pub const V1BETA1: &str = "v1beta1";

/// On a v1beta1 object: the v1alpha2 fields it was written with that v1beta1 cannot hold. Its
/// presence also says the object was written through v1alpha2 (the cloud then keeps reported
/// values in the Device's `status.twins` as well).
pub const STASH_V1ALPHA2: &str = "devices.kedge.io/v1alpha2";
/// On a v1alpha2 object: the v1beta1 fields v1alpha2 cannot hold.
pub const STASH_V1BETA1: &str = "devices.kedge.io/v1beta1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{GROUP} has no version {0:?} (served: v1alpha2, v1beta1)")]
    Version(String),
    #[error("{0} is not a converted kind of {GROUP}")]
    Kind(String),
}

/// The version part of an object's `apiVersion` (`v1alpha2` of `devices.kubeedge.io/v1alpha2`).
pub fn version_of(obj: &Value) -> &str {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    av.rsplit('/').next().unwrap_or("")
}

/// `obj` (a Device or DeviceModel in the version its `apiVersion` says) in version `to`.
pub fn convert(kind: &str, obj: &Value, to: &str) -> Result<Value, ConvertError> {
    let from = version_of(obj);
    for v in [from, to] {
        if v != V1ALPHA2 && v != V1BETA1 {
            return Err(ConvertError::Version(v.to_string()));
        }
    }
    if from == to {
        return Ok(obj.clone());
    }
    let up = to == V1BETA1;
    let mut out = match (kind, up) {
        ("Device", true) => device::up(obj),
        ("Device", false) => device::down(obj),
        ("DeviceModel", true) => model::up(obj),
        ("DeviceModel", false) => model::down(obj),
        _ => return Err(ConvertError::Kind(kind.to_string())),
    };
    out["apiVersion"] = Value::String(format!("{GROUP}/{to}"));
    Ok(out)
}

#[cfg(test)]
mod tests;
