//! Parsing what a request addresses: the URL shapes of the Kubernetes API, query parameters and
//! request bodies.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;
use crate::registry::{Registry, Resource};

/// A URL under `/api/v1` or `/apis/<group>/<version>` that names a resource.
pub struct ResourcePath {
    pub res: Arc<Resource>,
    pub version: String,
    /// The namespace in the URL; `None` for cluster-scoped kinds and all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Everything the server answers.
pub enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    OpenApiIndex,
    OpenApiGroupVersion(String, String),
    OpenApiV2,
    Resource(ResourcePath),
}

pub fn route(reg: &Registry, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::GroupVersion(String::new(), v.to_string()),
        ["apis", g, v] => Route::GroupVersion(g.to_string(), v.to_string()),
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", "api", v] => Route::OpenApiGroupVersion(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiGroupVersion(g.to_string(), v.to_string()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["api", v, rest @ ..] => Route::Resource(resource_path(reg, "", v, rest)?),
        ["apis", g, v, rest @ ..] => Route::Resource(resource_path(reg, g, v, rest)?),
        _ => return Err(ApiError::path_not_found()),
    })
}

fn resource_path(
    reg: &Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<ResourcePath, ApiError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    // `namespaces/<ns>/<plural>/...` addresses a namespaced kind, unless the third segment is a
    // subresource of the namespace itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(decode(ns)), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(decode(n)), None),
        [p, n, s] => (*p, Some(decode(n)), Some(s.to_string())),
        _ => return Err(ApiError::path_not_found()),
    };
    let res = reg
        .lookup(group, version, plural)
        .ok_or_else(ApiError::path_not_found)?;
    if namespace.is_some() && !res.namespaced {
        return Err(ApiError::path_not_found());
    }
    if res.namespaced && name.is_some() && namespace.is_none() {
        return Err(ApiError::path_not_found());
    }
    if let Some(s) = &sub {
        let served = res.version(version);
        let ok = (s == "status" && served.is_some_and(|v| v.status))
            || (s == "scale" && served.is_some_and(|v| v.scale))
            || (s == "binding" && res.key() == "pods")
            || (crate::podstreams::SUBRESOURCES.contains(&s.as_str()) && res.key() == "pods")
            || (s == "finalize" && res.key() == "namespaces");
        if !ok {
            return Err(ApiError::path_not_found());
        }
    }
    Ok(ResourcePath {
        version: version.to_string(),
        namespace,
        name,
        subresource: sub,
        res,
    })
}

/// Query parameters (the last value of a repeated key wins).
#[derive(Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "{k}: Invalid value: {v:?}: must be a non-negative integer"
                ))
            }),
        }
    }
}

/// Decodes a request body as JSON, or YAML or protobuf when the content type says so.
pub fn decode_body(content_type: &str, body: &Bytes, res: &Resource) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if ct.ends_with("yaml") {
        serde_saphyr::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
    } else if ct == "application/vnd.kubernetes.protobuf" {
        use crate::protobuf::{ProtoError, decode};
        let version = res.storage.as_str();
        decode(&res.group, version, &res.kind, body).map_err(|e| match e {
            ProtoError::Unsupported(_) => ApiError::unsupported_media(e.to_string()),
            ProtoError::Malformed(_) => ApiError::bad_request(e.to_string()),
        })
    } else if ct.contains("protobuf") || ct.contains("cbor") {
        Err(ApiError::unsupported_media(format!(
            "the content type {ct:?} is not supported: send application/json or application/yaml"
        )))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Result<ResourcePath, u16> {
        match route(&Registry::default(), path) {
            Ok(Route::Resource(r)) => Ok(r),
            Ok(_) => Err(0),
            Err(e) => Err(e.code),
        }
    }

    #[test]
    fn resource_urls() {
        let r = parse("/api/v1/namespaces/default/pods/p1/status").expect("pod status");
        assert_eq!(
            (
                r.res.key(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (
                "pods".to_string(),
                Some("default"),
                Some("p1"),
                Some("status")
            )
        );
        let ns = parse("/api/v1/namespaces/kube-system").expect("namespace");
        assert_eq!(
            (ns.res.key().as_str(), ns.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let fin = parse("/api/v1/namespaces/x/finalize").expect("finalize");
        assert_eq!(fin.subresource.as_deref(), Some("finalize"));
        let all = parse("/api/v1/pods").expect("all pods");
        assert!(all.namespace.is_none() && all.name.is_none());
        assert_eq!(parse("/api/v1/pods/x").err(), Some(404));
        assert_eq!(parse("/api/v1/namespaces/d/nodes").err(), Some(404));
        assert_eq!(
            parse("/api/v1/namespaces/d/configmaps/x/status").err(),
            Some(404)
        );
        assert_eq!(parse("/apis/nope.io/v1/things").err(), Some(404));
    }

    #[test]
    fn bodies() {
        let reg = Registry::default();
        let cm = reg.by_key("configmaps").expect("builtin");
        let decode = |ct: &str, body: &'static str| decode_body(ct, &Bytes::from(body), &cm);
        let y = decode("application/yaml", "a: 1\nb: [x]\n").expect("yaml");
        assert_eq!(y["b"][0], "x");
        assert_eq!(decode("application/json", "{").expect_err("bad").code, 400);
        assert_eq!(decode("application/json", "").expect_err("empty").code, 400);
        assert_eq!(decode("application/cbor", "x").expect_err("cbor").code, 415);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any body under any content type the API takes: decoded, or a 4xx.
            #[test]
            fn any_body_is_decoded_or_refused(
                body in proptest::collection::vec(any::<u8>(), 1..256),
                ct in prop_oneof![
                    Just("application/json"),
                    Just("application/yaml"),
                    Just("application/vnd.kubernetes.protobuf"),
                    Just("application/cbor"),
                ],
                key in prop_oneof![Just("configmaps"), Just("secrets"), Just("namespaces"), Just("pods")],
            ) {
                let reg = Registry::default();
                let res = reg.by_key(key).expect("built-in");
                if let Err(e) = decode_body(ct, &Bytes::from(body), &res) {
                    prop_assert!((400..500).contains(&e.code), "{}", e.code);
                }
            }

            /// Any URL path: routed, or a 4xx.
            #[test]
            fn any_path_is_routed_or_refused(path in "(/[a-z0-9.:%-]{0,12}){0,9}") {
                if let Err(e) = route(&Registry::default(), &path) {
                    prop_assert!((400..500).contains(&e.code), "{}", e.code);
                }
            }
        }
    }
}
