//! What every store gets: the KubeEdge CRDs (`deploy/crds/`) and the system namespaces. Both are
//! ordinary objects. A built-in CRD is created when missing and brought up to this kedge's
//! version when it differs (a newer kedge serves more versions or fields), unless its
//! annotation `kedge.io/built-in` is `"false"`: then it is the user's to keep as it is.

use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::handlers::SYSTEM_NAMESPACES;
use crate::meta::{FieldValidation, Target, prepare_create, prepare_update};
use crate::registry::CRD_KEY;
use crate::store::Change;

/// The KubeEdge CRDs served without being applied (the same files users apply to a real cluster).
pub const BUILTIN_CRDS: [(&str, &str); 9] = [
    (
        "devices_v1beta1_devicemodel.yaml",
        include_str!("../../../deploy/crds/devices_v1beta1_devicemodel.yaml"),
    ),
    (
        "devices_v1beta1_device.yaml",
        include_str!("../../../deploy/crds/devices_v1beta1_device.yaml"),
    ),
    (
        "devices_v1beta1_devicestatus.yaml",
        include_str!("../../../deploy/crds/devices_v1beta1_devicestatus.yaml"),
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
    (
        "apps_v1alpha1_nodegroup.yaml",
        include_str!("../../../deploy/crds/apps_v1alpha1_nodegroup.yaml"),
    ),
    (
        "apps_v1alpha1_edgeapplication.yaml",
        include_str!("../../../deploy/crds/apps_v1alpha1_edgeapplication.yaml"),
    ),
];

/// The annotation that, set to `"false"`, keeps a built-in CRD as the user left it.
pub const BUILT_IN: &str = "kedge.io/built-in";

/// Writes `obj` when missing; with `upgrade`, also replaces the `spec` of a stored one that
/// differs (unless it opted out with [`BUILT_IN`] `"false"`).
fn ensure(api: &Api, key: &str, ns: &str, mut obj: Value, upgrade: bool) -> Result<(), ApiError> {
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
        let Some(cur) = cur else {
            return Ok(Change::Put(obj));
        };
        let current = cur.value();
        let kept = current.pointer(&format!(
            "/metadata/annotations/{}",
            BUILT_IN.replace('/', "~1")
        )) == Some(&json!("false"));
        if !upgrade || kept || current.get("spec") == obj.get("spec") {
            return Ok(Change::None);
        }
        tracing::info!(crd = %name, "built-in CRD brought up to this version of kedge");
        let mut next = current.clone();
        next["spec"] = obj["spec"].clone();
        Ok(prepare_update(&target, &current, next, false)?.0)
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
        let name = crate::meta::str_at(&crd, "/metadata/name").to_string();
        ensure(api, CRD_KEY, "", crd, true)?;
        // Served as stored (as this kedge wrote it, or as the user keeps it).
        if let Some(stored) = api.store.get(CRD_KEY, "", &name) {
            api.registry
                .apply_crd(&stored.value())
                .map_err(|e| ApiError::internal(format!("built-in CRD {name}: {e}")))?;
        }
    }
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        ensure(api, "namespaces", "", obj, false)?;
    }
    Ok(())
}
