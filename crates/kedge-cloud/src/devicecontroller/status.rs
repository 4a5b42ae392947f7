//! DeviceStatus (v1beta1, KubeEdge v1.23): one per Device, of the same name, owned by it
//! (controller ownerReference, so a cluster's garbage collector removes it with the Device).
//! The controller creates it for every Device it sees, as cloudcore does, and removes those
//! whose Device is gone (the embedded API has no garbage collector of its own yet). Unlike
//! cloudcore, a Device whose DeviceStatus cannot be created is still sent to its node: reports
//! create it when missing.

use kube::api::{Api, DeleteParams, DynamicObject, PostParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::{GROUP, VERSION};

pub fn status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "DeviceStatus"),
        "devicestatuses",
    )
}

/// The DeviceStatus a new Device gets (pure).
pub fn new_status(device: &DynamicObject) -> Value {
    let m = &device.metadata;
    json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": "DeviceStatus",
        "metadata": {"name": m.name, "namespace": m.namespace, "ownerReferences": [{
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "Device", "name": m.name,
            "uid": m.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {}, "status": {}})
}

/// The UID of the Device that owns a DeviceStatus.
pub fn owner_uid(status: &DynamicObject) -> Option<&str> {
    let refs = status.metadata.owner_references.as_ref()?;
    refs.iter()
        .find(|r| r.kind == "Device" && r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

/// Creates `device`'s DeviceStatus; one that exists already is left as it is.
pub async fn create(client: &kube::Client, device: &DynamicObject) -> Result<(), kube::Error> {
    let ns = device.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &status_resource());
    let obj: DynamicObject =
        serde_json::from_value(new_status(device)).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Deletes a DeviceStatus whose Device is gone (only if it is still the one seen).
pub async fn remove(client: &kube::Client, status: &DynamicObject) -> Result<(), kube::Error> {
    let ns = status.metadata.namespace.as_deref().unwrap_or_default();
    let name = status.metadata.name.as_deref().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &status_resource());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: status.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_status_is_owned_by_its_device() {
        let d: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device", "metadata": {"name": "s", "namespace": "default", "uid": "u-1"}}))
            .expect("device");
        let st = new_status(&d);
        assert_eq!(st["metadata"]["name"], "s");
        assert_eq!(
            st["metadata"]["ownerReferences"][0],
            json!({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "name": "s",
                "uid": "u-1", "controller": true, "blockOwnerDeletion": true})
        );
        let st: DynamicObject = serde_json::from_value(st).expect("status");
        assert_eq!(owner_uid(&st), Some("u-1"));
    }
}
