//! The chart's data: the cloud's own metrics sampled every [`PERIOD`](super::history::PERIOD)
//! into an hour of [`History`], sent to each page as server-sent events (the hour first, as
//! an event named `history`, then each new point).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::Dash;
use super::history::{History, PERIOD, Point};

pub(super) struct Chart {
    history: Arc<Mutex<History>>,
    points: tokio::sync::broadcast::Sender<Point>,
}

impl Chart {
    /// Starts sampling `source`; the task is the caller's to stop.
    pub(super) fn start(
        source: kedge_http::metrics::Source,
    ) -> (Chart, tokio::task::JoinHandle<()>) {
        let history = Arc::new(Mutex::new(History::default()));
        let (points, _) = tokio::sync::broadcast::channel(16);
        let chart = Chart {
            history: history.clone(),
            points: points.clone(),
        };
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(PERIOD);
            loop {
                tick.tick().await;
                let mono = started.elapsed().as_millis() as u64;
                let wall = jiff::Timestamp::now().as_millisecond().max(0) as u64;
                let point = lock(&history).sample(mono, wall, &source());
                if let Some(p) = point {
                    // No page watching: nobody to tell.
                    let _ = points.send(p);
                }
            }
        });
        (chart, task)
    }
}

fn lock(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) async fn stream(State(d): State<Arc<Dash>>, headers: HeaderMap) -> Response {
    if d.signed_in(&headers).await.is_none() {
        return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
    }
    // Subscribed before the hour is read: no point falls between the two.
    let next = points_from(d.metrics.points.subscribe());
    let hour = lock(&d.metrics.history).points();
    let first = Event::default()
        .event("history")
        .json_data(&hour)
        .unwrap_or_default();
    let rest = next.filter_map(|p| async move { Event::default().json_data(p).ok() });
    let events = futures::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<_, Infallible>);
    Sse::new(events).into_response()
}

/// The points broadcast from now on; a page too slow to take them skips the missed ones.
fn points_from(rx: tokio::sync::broadcast::Receiver<Point>) -> impl futures::Stream<Item = Point> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(p) => return Some((p, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
