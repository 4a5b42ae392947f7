//! The request dispatcher: health, authentication, body limits, discovery, then the verbs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::{Api, MAX_BODY};
use crate::call::Call;
use crate::discovery;
use crate::error::ApiError;
use crate::handlers;
use crate::request::{Query, Route, route};

fn json(v: Value) -> Response {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

pub async fn dispatch(State(api): State<Arc<Api>>, req: Request) -> Response {
    match serve(api, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.code >= 500 {
                tracing::error!(code = e.code, message = %e.message, "request failed");
            }
            e.into_response()
        }
    }
}

async fn serve(api: Arc<Api>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let r = route(&api.registry, &path);
    if let Ok(Route::Health) = r {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    if !api.authorized(&req) {
        return Err(ApiError::unauthorized());
    }
    let reg = &api.registry;
    let found = |v: Option<Value>| v.map(json).ok_or_else(ApiError::path_not_found);
    match r? {
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::Version => Ok(json(discovery::version())),
        Route::CoreVersions => Ok(json(discovery::core_versions(&api.server_address))),
        Route::Groups => Ok(json(discovery::group_list(reg))),
        Route::Group(g) => found(discovery::group(reg, &g)),
        Route::GroupVersion(g, v) => found(discovery::resource_list(reg, &g, &v)),
        Route::OpenApiIndex => {
            let hash = format!("{:016X}", api.discovery_generation());
            Ok(json(discovery::openapi_index(reg, &hash)))
        }
        Route::OpenApiGroupVersion(g, v) => found(discovery::openapi_gv(reg, &g, &v)),
        Route::OpenApiV2 => {
            let accept = req
                .headers()
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let (ct, body) = discovery::openapi_v2(accept.contains("protobuf"));
            Ok((StatusCode::OK, [("content-type", ct)], body).into_response())
        }
        Route::Resource(path)
            if path.res.key() == "pods"
                && path
                    .subresource
                    .as_deref()
                    .is_some_and(|s| crate::podstreams::SUBRESOURCES.contains(&s)) =>
        {
            crate::podstreams::serve(api, req, path).await
        }
        Route::Resource(path) if path.res.group == crate::metrics::GROUP => {
            let query = Query::parse(req.uri().query());
            crate::metrics::serve(api, req.method(), path, &query).await
        }
        Route::Resource(path) => {
            let (parts, body) = req.into_parts();
            let body = read_body(body, &parts.headers).await?;
            let call = Call {
                method: parts.method,
                query: Query::parse(parts.uri.query()),
                headers: parts.headers,
                path,
                body,
            };
            handlers::handle(api, call).await
        }
    }
}

async fn read_body(body: Body, headers: &axum::http::HeaderMap) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY))
}
