//! `/metrics` (Prometheus/OpenMetrics text) and `/healthz` on a plain-HTTP loopback listener.
//! Metrics are read from live state at scrape time, so components keep their own counters and
//! nothing has to be kept in step.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::BindError;

/// One value read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub value: u64,
}

impl Reading {
    pub fn gauge(name: &'static str, help: &'static str, value: u64) -> Reading {
        Reading {
            name,
            help,
            counter: false,
            value,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Reading {
        Reading {
            name,
            help,
            counter: true,
            value,
        }
    }
}

/// Produces the current readings.
pub type Source = Arc<dyn Fn() -> Vec<Reading> + Send + Sync>;

struct Live(Source);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for r in (self.0)() {
            if r.counter {
                let c = ConstCounter::new(r.value);
                c.encode(encoder.encode_descriptor(r.name, r.help, None, c.metric_type())?)?;
            } else {
                let g = ConstGauge::new(r.value as i64);
                g.encode(encoder.encode_descriptor(r.name, r.help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// Renders the readings in the OpenMetrics text format.
pub fn render(source: &Source) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Live(source.clone())));
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Serves `/metrics` and `/healthz` on `addr` (plain HTTP: bind it to loopback).
pub async fn serve(addr: SocketAddr, source: Source) -> Result<SocketAddr, BindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| BindError { addr, cause })?;
    let bound = listener
        .local_addr()
        .map_err(|cause| BindError { addr, cause })?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let source = source.clone();
                async move {
                    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                    ([(CONTENT_TYPE, ct)], render(&source)).into_response()
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics listener ended");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_and_counters() {
        let source: Source = Arc::new(|| {
            vec![
                Reading::gauge("kedge_test_nodes", "Nodes.", 3),
                Reading::counter("kedge_test_acks", "Acks.", 7),
            ]
        });
        let text = render(&source);
        assert!(
            text.contains("# TYPE kedge_test_nodes gauge\nkedge_test_nodes 3\n"),
            "{text}"
        );
        assert!(text.contains("kedge_test_acks_total 7"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
