//! The real API server (TLS, SQLite) in-process, driven by kube-rs: the semantics controllers
//! and kubectl rely on.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::json;

struct Server {
    server: kedge_apiserver::ApiServer,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = kedge_apiserver::Config::new(dir.path());
    cfg.port = 0;
    cfg.watch_history = 50;
    cfg.bookmark_interval = Duration::from_millis(200);
    let server = kedge_apiserver::start(cfg).await.expect("server starts");
    let client = client_for(&server.kubeconfig).await;
    Server {
        server,
        client,
        _dir: dir,
    }
}

async fn client_for(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}))
    .expect("configmap")
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn create_get_replace_conflict_delete() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let dup = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect_err("dup");
    assert_eq!(api_code(dup), (409, "AlreadyExists".into()));

    let mut next = created.clone();
    next.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &next)
        .await
        .expect("replace");
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let stale = cms
        .replace("a", &PostParams::default(), &next)
        .await
        .expect_err("stale");
    assert_eq!(api_code(stale), (409, "Conflict".into()));

    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = cms.get("a").await.expect_err("gone");
    assert_eq!(api_code(gone), (404, "NotFound".into()));
    s.server.shutdown().await;
}

#[tokio::test]
async fn selectors_and_pagination() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({"tier": tier})),
        )
        .await
        .expect("create");
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect::<Vec<_>>()
    };
    let odd = cms
        .list(&ListParams::default().labels("tier=odd"))
        .await
        .expect("list");
    assert_eq!(names(odd), ["c1", "c3", "c5"]);
    let one = cms
        .list(&ListParams::default().fields("metadata.name=c4"))
        .await
        .expect("list");
    assert_eq!(names(one), ["c4"]);
    let set = cms
        .list(&ListParams::default().labels("tier in (even),!missing"))
        .await
        .expect("list");
    assert_eq!(names(set).len(), 4);

    let (mut all, mut token) = (Vec::new(), None::<String>);
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.expect("page");
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        all.extend(names(page));
        if token.is_none() {
            break;
        }
    }
    assert_eq!(all, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    let bad = cms
        .list(&ListParams::default().labels("tier in odd"))
        .await
        .expect_err("bad");
    assert_eq!(api_code(bad).0, 400);
    s.server.shutdown().await;
}

#[tokio::test]
async fn watch_resumes_expires_and_bookmarks() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("w", json!({})))
        .await
        .expect("create");
    let start_rv = first.metadata.resource_version.clone().expect("rv");
    for i in 0..3 {
        let p = json!({"data": {"i": i.to_string()}});
        cms.patch("w", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .expect("patch");
    }
    // Resume from the create: exactly the three modifications follow.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &start_rv)
        .await
        .expect("watch")
        .boxed();
    for i in 0..3 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Modified(c)))) => {
                assert_eq!(
                    c.data.and_then(|d| d.get("i").cloned()),
                    Some(i.to_string())
                )
            }
            other => panic!("expected Modified #{i}, got {other:?}"),
        }
    }
    // Push the start out of the 50-revision history: resuming from it is 410 Gone.
    for i in 0..60 {
        let p = json!({"data": {"n": i.to_string()}});
        cms.patch("w", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .expect("patch");
    }
    let mut old = cms
        .watch(&WatchParams::default(), &start_rv)
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), old.try_next()).await {
        Ok(Ok(Some(WatchEvent::Error(status)))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.contains("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // An idle watch that asked for bookmarks gets one carrying the current revision.
    let current = cms
        .get("w")
        .await
        .expect("get")
        .metadata
        .resource_version
        .expect("rv");
    let mut idle = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            },
            &current,
        )
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), idle.try_next()).await {
        Ok(Ok(Some(WatchEvent::Bookmark(b)))) => assert_eq!(b.metadata.resource_version, current),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn finalizers_and_namespace_deletion_cascade() {
    let s = server().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "t1"}})).expect("ns");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "t1");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held)
        .await
        .expect("create held");
    cms.create(&PostParams::default(), &cm("free", json!({})))
        .await
        .expect("create free");

    nss.delete("t1", &DeleteParams::default())
        .await
        .expect("delete ns");
    let t1 = nss.get("t1").await.expect("still terminating");
    assert_eq!(
        t1.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        api_code(cms.get("free").await.expect_err("free is gone")).0,
        404
    );
    let held = cms.get("held").await.expect("held by its finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    let refused = cms
        .create(&PostParams::default(), &cm("late", json!({})))
        .await
        .expect_err("closed");
    assert_eq!(api_code(refused).0, 403);

    let p = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("release");
    assert_eq!(
        api_code(cms.get("held").await.expect_err("released")).0,
        404
    );
    assert_eq!(
        api_code(nss.get("t1").await.expect_err("namespace finalized")).0,
        404
    );
    let system = nss
        .delete("default", &DeleteParams::default())
        .await
        .expect_err("protected");
    assert_eq!(api_code(system).0, 403);
    s.server.shutdown().await;
}

#[tokio::test]
async fn crds_serve_validate_and_go_away() {
    let s = server().await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"size": {"type": "integer", "minimum": 1}}}}}}}]}});
    let crds: Api<DynamicObject> = Api::all_with(
        s.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let obj: DynamicObject = serde_json::from_value(crd).expect("crd");
    crds.create(&PostParams::default(), &obj)
        .await
        .expect("create crd");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Gizmo"),
        "gizmos",
    );
    let gizmos: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &ar);
    let good: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Gizmo",
        "metadata": {"name": "g1"}, "spec": {"size": 3, "color": "red"}}))
        .expect("gizmo");
    let stored = gizmos
        .create(&PostParams::default(), &good)
        .await
        .expect("create gizmo");
    assert_eq!(
        stored.data["spec"],
        json!({"size": 3}),
        "unknown fields are pruned"
    );
    let bad: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Gizmo",
        "metadata": {"name": "g2"}, "spec": {"size": 0}}))
        .expect("gizmo");
    let err = gizmos
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    assert_eq!(api_code(err), (422, "Invalid".into()));

    crds.delete("gizmos.example.com", &DeleteParams::default())
        .await
        .expect("delete crd");
    let after = gizmos.get("g1").await.expect_err("kind is gone");
    assert_eq!(api_code(after).0, 404);
    s.server.shutdown().await;
}

#[tokio::test]
async fn auth_body_limits_and_malformed_input() {
    let s = server().await;
    let url = format!("{}/api/v1/namespaces/default/configmaps", s.server.url);
    let post = |body: Vec<u8>| {
        http::Request::post(url.as_str())
            .header("content-type", "application/json")
            .body(body)
            .expect("request")
    };
    let malformed = s
        .client
        .request_text(post(b"{not json".to_vec()))
        .await
        .expect_err("400");
    let (code, _) = api_code(malformed);
    assert_eq!(code, 400);
    let mut big =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"x":""#
            .to_vec();
    big.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    big.extend(br#""}}"#);
    let too_big = s.client.request_text(post(big)).await.expect_err("413");
    assert_eq!(api_code(too_big).0, 413);
    let wrong_kind = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec();
    assert_eq!(
        api_code(
            s.client
                .request_text(post(wrong_kind))
                .await
                .expect_err("400")
        )
        .0,
        400
    );

    // No token: 401. Build a client that trusts the CA but sends no credentials.
    let mut kc = Kubeconfig::read_from(&s.server.kubeconfig).expect("kubeconfig");
    for u in &mut kc.auth_infos {
        u.auth_info = None;
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("cfg");
    let anon = Client::try_from(cfg).expect("client");
    let denied = Api::<ConfigMap>::namespaced(anon, "default")
        .list(&ListParams::default())
        .await;
    assert_eq!(api_code(denied.expect_err("401")).0, 401);
    s.server.shutdown().await;
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("m", json!({})))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.expect("rv");
    let wp = WatchParams::default().labels("team=blue").timeout(10);
    let mut stream = cms.watch(&wp, &rv).await.expect("watch").boxed();
    for (team, want) in [("blue", "ADDED"), ("blue2", "DELETED"), ("blue", "ADDED")] {
        let p = json!({"metadata": {"labels": {"team": team}}});
        cms.patch("m", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .expect("patch");
        let got = match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(_)))) => "ADDED",
            Ok(Ok(Some(WatchEvent::Deleted(_)))) => "DELETED",
            other => panic!("labelled {team}: unexpected {other:?}"),
        };
        assert_eq!(got, want, "labelled {team}");
    }
    s.server.shutdown().await;
}

/// `k8s\0` + runtime.Unknown{typeMeta, raw}: what client-go sends with the protobuf content type.
fn protobuf_body(api_version: &str, kind: &str, obj: &impl prost::Message) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [
        b"k8s\0".as_slice(),
        &prost::Message::encode_to_vec(&unknown),
    ]
    .concat()
}

async fn post_protobuf(client: &Client, path: &str, body: Vec<u8>) -> Result<String, kube::Error> {
    let req = http::Request::post(path)
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .header("accept", "application/json")
        .body(body)
        .expect("request");
    client.request_text(req).await
}

#[tokio::test]
async fn go_clients_create_pods_and_workloads_with_protobuf_bodies() {
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    let s = server().await;
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    let template = core::PodTemplateSpec {
        metadata: Some(meta("")),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: Some("web".into()),
                image: Some("nginx:1.27".into()),
                resources: Some(core::ResourceRequirements {
                    requests: [(
                        "cpu".to_string(),
                        Quantity {
                            string: Some("100m".into()),
                        },
                    )]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let selector = Some(LabelSelector {
        match_labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    });
    let pod = core::Pod {
        metadata: Some(meta("p1")),
        spec: template.spec.clone(),
        status: None,
    };
    post_protobuf(
        &s.client,
        "/api/v1/namespaces/default/pods",
        protobuf_body("v1", "Pod", &pod),
    )
    .await
    .expect("pod created");
    let deployment = apps::Deployment {
        metadata: Some(meta("web")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(3),
            selector: selector.clone(),
            template: Some(template.clone()),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: Some("50%".into()),
                    }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: None,
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let path = "/apis/apps/v1/namespaces/default/deployments";
    post_protobuf(
        &s.client,
        path,
        protobuf_body("apps/v1", "Deployment", &deployment),
    )
    .await
    .expect("deployment created");
    let sts = apps::StatefulSet {
        metadata: Some(meta("db")),
        spec: Some(apps::StatefulSetSpec {
            replicas: Some(2),
            selector,
            template: Some(template),
            service_name: Some("db".into()),
            ..Default::default()
        }),
        status: None,
    };
    let path = "/apis/apps/v1/namespaces/default/statefulsets";
    post_protobuf(
        &s.client,
        path,
        protobuf_body("apps/v1", "StatefulSet", &sts),
    )
    .await
    .expect("statefulset created");

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::default_namespaced(s.client.clone());
    let p = pods.get("p1").await.expect("pod");
    let c = &p.spec.as_ref().expect("spec").containers[0];
    assert_eq!(c.image.as_deref(), Some("nginx:1.27"));
    let cpu = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"));
    assert_eq!(cpu.map(|q| q.0.as_str()), Some("100m"));
    assert_eq!(
        c.image_pull_policy.as_deref(),
        Some("IfNotPresent"),
        "defaulted like JSON"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::default_namespaced(s.client.clone());
    let d = deployments.get("web").await.expect("deployment");
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(3));
    let ru = spec
        .strategy
        .and_then(|s| s.rolling_update)
        .expect("rolling update");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as Ios;
    assert_eq!(ru.max_surge, Some(Ios::String("50%".into())));
    assert_eq!(ru.max_unavailable, Some(Ios::Int(0)));
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::default_namespaced(s.client.clone());
    let st = sets.get("db").await.expect("statefulset");
    assert_eq!(
        st.spec.as_ref().and_then(|s| s.service_name.as_deref()),
        Some("db")
    );

    let bad = post_protobuf(
        &s.client,
        "/api/v1/namespaces/default/pods",
        b"k8s\0\x12\xff".to_vec(),
    )
    .await;
    assert_eq!(api_code(bad.expect_err("malformed")).0, 400);
}
