//! What every fresh store gets: the KubeEdge CRDs (`deploy/crds/`) and the system namespaces.
//! Both are ordinary objects, created only when missing, so users may update them.

use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::handlers::SYSTEM_NAMESPACES;
use crate::meta::{FieldValidation, Target, prepare_create};
use crate::registry::CRD_KEY;
use crate::store::Change;

/// The KubeEdge CRDs served without being applied (the same files users apply to a real cluster).
pub const BUILTIN_CRDS: [(&str, &str); 6] = [
    (
        "devices_v1alpha2_devicemodel.yaml",
        include_str!("../../../deploy/crds/devices_v1alpha2_devicemodel.yaml"),
    ),
    (
        "devices_v1alpha2_device.yaml",
        include_str!("../../../deploy/crds/devices_v1alpha2_device.yaml"),
    ),
    (
        "rules_v1_rule.yaml",
        include_str!("../../../deploy/crds/rules_v1_rule.yaml"),
    ),
    (
        "rules_v1_ruleendpoint.yaml",
        include_str!("../../../deploy/crds/rules_v1_ruleendpoint.yaml"),
    ),
    (
        "reliablesyncs_v1alpha1_objectsync.yaml",
        include_str!("../../../deploy/crds/reliablesyncs_v1alpha1_objectsync.yaml"),
    ),
    (
        "reliablesyncs_v1alpha1_clusterobjectsync.yaml",
        include_str!("../../../deploy/crds/reliablesyncs_v1alpha1_clusterobjectsync.yaml"),
    ),
];

fn create_if_missing(api: &Api, key: &str, ns: &str, mut obj: Value) -> Result<(), ApiError> {
    let res = api
        .registry
        .by_key(key)
        .ok_or_else(|| ApiError::internal(format!("{key} is not served")))?;
    let version = res.versions[0].name.clone();
    let target = Target {
        res: &res,
        version: &version,
        namespace: ns,
        fv: FieldValidation::Strict,
    };
    let (name, _) = prepare_create(&target, &mut obj)?;
    api.store.write::<ApiError>(key, ns, &name, |cur| {
        Ok(if cur.is_some() {
            Change::None
        } else {
            Change::Put(obj)
        })
    })?;
    Ok(())
}

/// Serves every stored CRD, then adds the built-in CRDs and system namespaces if missing.
pub fn run(api: &Api) -> Result<(), ApiError> {
    for crd in api.store.list(CRD_KEY, None).0 {
        if let Err(e) = api.registry.apply_crd(&crd.value()) {
            tracing::warn!(crd = %crd.name, error = %e, "stored CRD not served");
        }
    }
    for (file, text) in BUILTIN_CRDS {
        let crd: Value = serde_saphyr::from_str(text)
            .map_err(|e| ApiError::internal(format!("built-in CRD {file}: {e}")))?;
        create_if_missing(api, CRD_KEY, "", crd)?;
    }
    for crd in api.store.list(CRD_KEY, None).0 {
        if api.registry.by_key(&crd.name).is_none() {
            api.registry
                .apply_crd(&crd.value())
                .map_err(|e| ApiError::internal(format!("built-in CRD {}: {e}", crd.name)))?;
        }
    }
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create_if_missing(api, "namespaces", "", obj)?;
    }
    Ok(())
}
