//! The last hour of the cloud's own metrics for the dashboard's chart: messages per second
//! (from counters) and connected nodes (a gauge), one point per sample. Pure: the caller reads
//! the metrics and gives the times.

use std::collections::VecDeque;
use std::time::Duration;

use kedge_http::metrics::Reading;

/// How often the dashboard samples the metrics.
pub const PERIOD: Duration = Duration::from_secs(5);
/// How far back the chart goes.
pub const SPAN: Duration = Duration::from_secs(3600);

/// Counters whose sum is "messages": edge messages applied (up) and acknowledged by edges
/// (down, router calls included).
const MESSAGES: [&str; 2] = [
    "kedge_edgecontroller_applied_messages",
    "kedge_downstream_acks",
];
const CONNECTED: &str = "kedge_cloudhub_connected_nodes";

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Wall-clock time, ms since the epoch (what the chart's axis shows).
    pub at: u64,
    /// Messages per second since the previous sample.
    pub rate: f64,
    pub connected: u64,
}

#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<Point>,
    /// The previous sample: monotonic ms and the message total.
    last: Option<(u64, u64)>,
}

impl History {
    /// Adds a sample taken at `mono_ms` (monotonic) / `wall_ms`; returns the new point (none
    /// for the first sample: a rate needs two).
    pub fn sample(&mut self, mono_ms: u64, wall_ms: u64, readings: &[Reading]) -> Option<Point> {
        let total: u64 = readings
            .iter()
            .filter(|r| MESSAGES.contains(&r.name))
            .map(|r| r.value)
            .sum();
        let connected = readings
            .iter()
            .find(|r| r.name == CONNECTED)
            .map_or(0, |r| r.value);
        let previous = self.last.replace((mono_ms, total));
        let (then, before) = previous?;
        let secs = mono_ms.saturating_sub(then) as f64 / 1000.0;
        if secs <= 0.0 {
            return None;
        }
        // A counter that went down (a restart) counts from zero.
        let rate = total.checked_sub(before).unwrap_or(total) as f64 / secs;
        let point = Point {
            at: wall_ms,
            rate: (rate * 100.0).round() / 100.0,
            connected,
        };
        self.points.push_back(point);
        let keep = (SPAN.as_millis() / PERIOD.as_millis()) as usize;
        while self.points.len() > keep {
            self.points.pop_front();
        }
        Some(point)
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(acks: u64, applied: u64, connected: u64) -> Vec<Reading> {
        vec![
            Reading::counter("kedge_downstream_acks", "", acks),
            Reading::counter("kedge_edgecontroller_applied_messages", "", applied),
            Reading::gauge("kedge_cloudhub_connected_nodes", "", connected),
            Reading::counter("kedge_cloudhub_sessions", "", 99),
        ]
    }

    #[test]
    fn rates_come_from_two_samples_and_an_hour_is_kept() {
        let mut h = History::default();
        assert_eq!(h.sample(0, 1_000, &readings(0, 0, 1)), None);
        let p = h
            .sample(5_000, 6_000, &readings(30, 20, 2))
            .expect("a point");
        assert_eq!(
            p,
            Point {
                at: 6_000,
                rate: 10.0,
                connected: 2
            }
        );
        // A restarted counter counts from zero, never negative.
        let p = h
            .sample(10_000, 11_000, &readings(5, 0, 2))
            .expect("a point");
        assert_eq!(p.rate, 1.0);
        for i in 3..1000u64 {
            h.sample(i * 5_000, i * 5_000, &readings(i, i, 3));
        }
        assert_eq!(h.points().len(), 720);
        assert_eq!(h.points().last().map(|p| p.connected), Some(3));
    }
}
