//! `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics, so `kubectl top node|pod` work without a
//! metrics-server: each request asks the nodes concerned for their figures now (a `Stats` stream
//! through the cloud, as metrics-server scrapes kubelets). A node that does not answer in time
//! is left out, as metrics-server leaves it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kedge_stream::request::NodeStats;
use kedge_stream::{NodeStreams, StreamRequest};
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::request::{Query, ResourcePath};
use crate::selectors::LabelSelector;

pub(crate) const GROUP: &str = "metrics.k8s.io";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// How long a node has to measure and answer.
const NODE_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(
    api: Arc<Api>,
    method: &Method,
    path: ResourcePath,
    query: &Query,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "metrics are read-only: get and list",
        ));
    }
    let streams = api.streams().ok_or_else(|| ApiError {
        code: 503,
        reason: "ServiceUnavailable",
        message: "no cloud serves this API: node metrics cannot be read".into(),
        details: None,
    })?;
    let selector = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let body = if path.res.plural == "nodes" {
        nodes(&api, streams, path.name.as_deref(), &selector).await?
    } else {
        pods(&api, streams, &path, &selector).await?
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Ok((
        StatusCode::OK,
        [("content-type", "application/json")],
        bytes,
    )
        .into_response())
}

/// Each node's figures, asked of all of them at once.
async fn measure(
    streams: Arc<dyn NodeStreams>,
    nodes: BTreeSet<String>,
) -> Vec<(String, NodeStats)> {
    let asks = nodes.into_iter().map(|node| {
        let streams = streams.clone();
        async move {
            let stats = tokio::time::timeout(NODE_WAIT, ask(streams.as_ref(), &node))
                .await
                .ok()
                .flatten()?;
            Some((node, stats))
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn ask(streams: &dyn NodeStreams, node: &str) -> Option<NodeStats> {
    let mut s = match streams.open(node, &StreamRequest::Stats) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(node, error = %e, "no metrics from node");
            return None;
        }
    };
    let mut body = Vec::new();
    loop {
        match s.reader.recv().await {
            Ok(Some(d)) => body.extend(d),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(node, error = %e, "no metrics from node");
                return None;
            }
        }
    }
    serde_json::from_slice(&body).ok()
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

fn metadata(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> Value {
    let mut m = json!({"name": name, "creationTimestamp": jiff::Timestamp::now().to_string(),
                       "labels": labels});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn window(s: &NodeStats) -> String {
    format!("{}ms", s.window_ms)
}

async fn nodes(
    api: &Api,
    streams: Arc<dyn NodeStreams>,
    name: Option<&str>,
    selector: &LabelSelector,
) -> Result<Value, ApiError> {
    let (all, _) = api.store.list("nodes", None);
    let labels: BTreeMap<String, BTreeMap<String, String>> = all
        .iter()
        .filter(|n| name.is_none_or(|w| w == n.name) && selector.matches(&n.labels))
        .map(|n| (n.name.clone(), n.labels.clone()))
        .collect();
    let measured = measure(streams, labels.keys().cloned().collect()).await;
    let items: Vec<Value> = measured
        .iter()
        .map(|(node, s)| {
            json!({"kind": "NodeMetrics", "apiVersion": API_VERSION,
                   "metadata": metadata(node, None, &labels[node]),
                   "timestamp": s.time, "window": window(s), "usage": s.usage.quantities()})
        })
        .collect();
    match name {
        Some(n) => items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found("nodemetrics.metrics.k8s.io", n)),
        None => Ok(list("NodeMetrics", items)),
    }
}

async fn pods(
    api: &Api,
    streams: Arc<dyn NodeStreams>,
    path: &ResourcePath,
    selector: &LabelSelector,
) -> Result<Value, ApiError> {
    let ns = path.namespace.as_deref();
    let (all, _) = api.store.list("pods", ns);
    let wanted: BTreeMap<(String, String), (String, BTreeMap<String, String>)> = all
        .iter()
        .filter(|p| path.name.as_ref().is_none_or(|w| *w == p.name))
        .filter(|p| selector.matches(&p.labels))
        .filter_map(|p| {
            let v = p.value();
            let node = v.pointer("/spec/nodeName")?.as_str()?.to_string();
            Some((
                (p.namespace.clone(), p.name.clone()),
                (node, p.labels.clone()),
            ))
        })
        .collect();
    let nodes = wanted.values().map(|(n, _)| n.clone()).collect();
    let measured = measure(streams, nodes).await;
    let mut items = Vec::new();
    for (node, s) in &measured {
        for p in &s.pods {
            let key = (p.namespace.clone(), p.name.clone());
            let Some((on, labels)) = wanted.get(&key) else {
                continue;
            };
            if on != node {
                continue;
            }
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| json!({"name": c.name, "usage": c.usage.quantities()}))
                .collect();
            items.push(json!({"kind": "PodMetrics", "apiVersion": API_VERSION,
                "metadata": metadata(&p.name, Some(&p.namespace), labels),
                "timestamp": s.time, "window": window(s), "containers": containers}));
        }
    }
    match &path.name {
        Some(n) => items.into_iter().next().ok_or_else(|| {
            ApiError::not_found(
                "podmetrics.metrics.k8s.io",
                &format!("{}/{n}", ns.unwrap_or("")),
            )
        }),
        None => Ok(list("PodMetrics", items)),
    }
}
