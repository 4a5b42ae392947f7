//! Sync records (ObjectSync, ClusterObjectSync) in bulk. The cloud records every object each
//! node acknowledges: 190,000 records for 10,000 nodes of 19 objects each, two requests apiece
//! through the API (create, then the status). Here a batch of each kind is one commit, and each
//! write means what those requests mean (same validation, metadata, `resourceVersion` and watch
//! events); only the status comes in with the create, which the API would take in a second
//! request.

use kedge_core::delivery::RecordWrite;
use serde_json::json;

use crate::api::Api;
use crate::error::ApiError;
use crate::meta::{FieldValidation, Target, prepare_create, prepare_update};
use crate::store::Change;

const GROUP: &str = "reliablesyncs.kubeedge.io";

impl Api {
    /// Writes `records`, those of each kind in one commit; one result each, in order. Blocking.
    pub fn write_records(
        &self,
        records: &[RecordWrite],
    ) -> Result<Vec<Result<(), String>>, ApiError> {
        let mut results: Vec<Result<(), String>> = vec![Ok(()); records.len()];
        for (cluster, plural, kind) in [
            (false, "objectsyncs", "ObjectSync"),
            (true, "clusterobjectsyncs", "ClusterObjectSync"),
        ] {
            let mine: Vec<usize> = (0..records.len())
                .filter(|i| records[*i].namespace.is_none() == cluster)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let res = self
                .registry
                .lookup(GROUP, "v1alpha1", plural)
                .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
            let keys: Vec<(String, String)> = mine
                .iter()
                .map(|i| {
                    (
                        records[*i].namespace.clone().unwrap_or_default(),
                        records[*i].name.clone(),
                    )
                })
                .collect();
            let mut next = mine.iter();
            let written = self
                .store
                .write_many::<ApiError>(&res.key(), &keys, |ns, _, cur| {
                    let r = &records[*next.next().ok_or_else(|| ApiError::internal("record"))?];
                    let target = Target {
                        res: &res,
                        version: "v1alpha1",
                        namespace: ns,
                        fv: FieldValidation::Ignore,
                    };
                    match (r.delete, cur) {
                        (true, Some(_)) => Ok(Change::Delete),
                        (true, None) => Ok(Change::None),
                        (false, Some(cur)) => {
                            let current = cur.value();
                            let mut obj = current.clone();
                            obj["status"] = r.status.clone();
                            Ok(prepare_update(&target, &current, obj, true)?.0)
                        }
                        (false, None) => {
                            let mut obj = json!({
                                "apiVersion": format!("{GROUP}/v1alpha1"), "kind": kind,
                                "metadata": {"name": r.name, "namespace": r.namespace},
                                "spec": r.spec,
                            });
                            prepare_create(&target, &mut obj)?;
                            obj["status"] = r.status.clone();
                            Ok(Change::Put(obj))
                        }
                    }
                })?;
            for (i, w) in mine.into_iter().zip(written) {
                results[i] = w.map(drop).map_err(|e| e.message);
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_created_updated_and_deleted_many_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        let mut cfg = crate::Config::new(dir.path());
        cfg.port = 0;
        let server = crate::start(cfg).await.expect("api");
        let api = server.api.clone();
        let rec = |name: &str, ns: Option<&str>, rv: &str, delete| RecordWrite {
            namespace: ns.map(String::from),
            name: name.into(),
            spec: json!({"objectAPIVersion": "v1", "objectKind": "Pod", "objectName": "p"}),
            status: json!({"objectResourceVersion": rv, "objectHash": "00000000000000ab"}),
            delete,
        };
        let first = api
            .write_records(&[
                rec("n.u1", Some("default"), "5", false),
                rec("n.u2", None, "7", false),
            ])
            .expect("written");
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        let n_u1 = |at: &str| {
            let stored = api
                .store
                .get("objectsyncs.reliablesyncs.kubeedge.io", "default", "n.u1")
                .expect("stored");
            stored.value().pointer(at).cloned()
        };
        assert_eq!(
            n_u1("/status/objectResourceVersion"),
            Some(json!("5")),
            "status with the create"
        );
        assert!(
            api.store
                .get("clusterobjectsyncs.reliablesyncs.kubeedge.io", "", "n.u2")
                .is_some()
        );
        api.write_records(&[rec("n.u1", Some("default"), "9", false)])
            .expect("updated");
        assert_eq!(n_u1("/status/objectResourceVersion"), Some(json!("9")));
        assert_eq!(n_u1("/spec/objectKind"), Some(json!("Pod")), "spec kept");
        api.write_records(&[
            rec("n.u1", Some("default"), "9", true),
            rec("n.gone", Some("default"), "1", true),
        ])
        .expect("deleted");
        assert!(
            api.store
                .get("objectsyncs.reliablesyncs.kubeedge.io", "default", "n.u1")
                .is_none()
        );
    }
}
