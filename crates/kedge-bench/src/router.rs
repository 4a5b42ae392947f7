//! `kedge-bench router`: the seed's router paths end to end through a real `kedge up`:
//! - rest → eventbus: an HTTP POST to the router, timed until an MQTT client on the edge's broker
//!   receives the body; then flat out from several callers, until every message has arrived;
//! - rest → servicebus: an HTTP call through the router to a small app on the edge and back;
//! - eventbus → rest: an MQTT publish on the edge's broker, timed until a small HTTP app in the
//!   cloud receives the body; then flat out, until every message has arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::api::{print_summary, progress, rss_kib, start_server};
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    /// Requests timed one at a time, per path.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// rest→eventbus messages sent flat out (and eventbus→rest messages published flat out).
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// eventbus→rest messages per second for the sustained run (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    up_rate: u64,
    /// Seconds the sustained eventbus→rest run lasts.
    #[arg(long, default_value_t = 20)]
    up_secs: u64,
    /// Concurrent HTTP callers for the flat-out run.
    #[arg(long, default_value_t = 16)]
    callers: usize,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Bodies an app received, with when.
type Received = tokio::sync::mpsc::UnboundedSender<(Instant, Vec<u8>)>;

/// A minimal HTTP/1.1 app with keep-alive that answers every request `200 ok` (and hands each
/// body to `sink`, if given).
fn app(sink: Option<Received>) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut r = BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if let Some(s) = &sink {
                        let _ = s.send((Instant::now(), body));
                    }
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if r.get_mut().write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn create(client: &kube::Client, kind: &str, plural: &str, obj: Value) -> anyhow::Result<()> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rules.kubeedge.io", "v1", kind),
        plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    api.create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    Ok(())
}

async fn rules(client: &kube::Client, app_port: u16, cloud_app_port: u16) -> anyhow::Result<()> {
    let ep = |name: &str, kind: &str, props: Value| {
        json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint", "metadata": {"name": name},
            "spec": {"ruleEndpointType": kind, "properties": props}})
    };
    create(
        client,
        "RuleEndpoint",
        "ruleendpoints",
        ep("rest", "rest", json!({})),
    )
    .await?;
    create(
        client,
        "RuleEndpoint",
        "ruleendpoints",
        ep("bus", "eventbus", json!({})),
    )
    .await?;
    create(
        client,
        "RuleEndpoint",
        "ruleendpoints",
        ep(
            "sb",
            "servicebus",
            json!({"service_port": app_port.to_string()}),
        ),
    )
    .await?;
    let rule = |name: &str, path: &str, target: &str, tr: Value| {
        json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": name},
            "spec": {"source": "rest", "sourceResource": {"path": path}, "target": target, "targetResource": tr}})
    };
    create(
        client,
        "Rule",
        "rules",
        rule("to-bus", "/a", "bus", json!({"topic": "bench"})),
    )
    .await?;
    create(
        client,
        "Rule",
        "rules",
        rule("to-app", "/s", "sb", json!({"path": "/t"})),
    )
    .await?;
    let cloud_app = format!("http://127.0.0.1:{cloud_app_port}/up");
    let up = json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": "to-cloud"},
        "spec": {"source": "bus", "sourceResource": {"topic": "up", "node_name": "kube-edge-1"},
            "target": "rest", "targetResource": {"resource": cloud_app}}});
    create(client, "Rule", "rules", up).await?;
    Ok(())
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_server(a.kedge.clone())?;
    let pid = server.child.id();
    let router = server.port("router")?;
    let mqtt_port = server.port("MQTT broker")?;
    let client = server.client().await?;
    let app_port = app(None)?;
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
    let cloud_app_port = app(Some(up_tx))?;
    rules(&client, app_port, cloud_app_port).await?;
    let (mq, mut rx) = crate::twins::mqtt(mqtt_port, "bench-router", &["bench"]).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    let bus_url = format!("http://127.0.0.1:{router}/kube-edge-1/default/a");
    let app_url = format!("http://127.0.0.1:{router}/kube-edge-1/default/s/x");
    // Wait until both rules are in effect.
    let started = Instant::now();
    loop {
        let a = http
            .post(&bus_url)
            .body("warmup")
            .send()
            .await?
            .status()
            .as_u16();
        let b = http.get(&app_url).send().await?.status().as_u16();
        if a == 200 && b == 200 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("rules not in effect after 60 s (rest→eventbus {a}, servicebus {b})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while rx.try_recv().is_ok() {}
    let (rss_ready, _) = rss_kib(pid);

    // rest → eventbus, one at a time: POST → MQTT receipt.
    let mut bus = Latencies::default();
    for i in 0..a.samples {
        let body = format!("seq-{i}");
        let t = Instant::now();
        let status = http
            .post(&bus_url)
            .body(body.clone())
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("POST answered {status}");
        }
        loop {
            let (_, v) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("MQTT receipt within 10 s")?
                .context("MQTT")?;
            if v == Value::String(body.clone()) {
                break;
            }
        }
        bus.push(t.elapsed());
        if (i + 1) % 100 == 0 {
            progress("rest → eventbus", i + 1, a.samples);
        }
    }
    eprintln!();

    // servicebus round trips, one at a time.
    let mut sb = Latencies::default();
    for i in 0..a.samples {
        let t = Instant::now();
        let r = http.get(&app_url).send().await?;
        if !r.status().is_success() {
            bail!("servicebus answered {}", r.status());
        }
        r.bytes().await?;
        sb.push(t.elapsed());
        if (i + 1) % 100 == 0 {
            progress("servicebus round trip", i + 1, a.samples);
        }
    }
    eprintln!();

    // rest → eventbus flat out: until every message reached MQTT.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(_m) = rx.recv().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let failures = Arc::new(AtomicUsize::new(0));
    stream::iter(0..a.messages)
        .map(|i| {
            let (http, url, failures) = (http.clone(), bus_url.clone(), failures.clone());
            async move {
                match http.post(&url).body(format!("flat-{i}")).send().await {
                    Ok(r) if r.status().is_success() => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .buffer_unordered(a.callers)
        .collect::<Vec<()>>()
        .await;
    let accepted_secs = started.elapsed().as_secs_f64();
    let want = a.messages - failures.load(Ordering::Relaxed);
    while received.load(Ordering::Relaxed) < want {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {want} messages reached MQTT",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_secs = started.elapsed().as_secs_f64();
    counter.abort();
    let up = eventbus_to_rest(&mq, &mut up_rx, a.samples, a.messages).await?;
    let sustained = match a.up_rate {
        0 => None,
        rate => Some(sustained_upstream(&mq, &mut up_rx, rate, a.up_secs).await?),
    };
    let (rss_end, hwm) = rss_kib(pid);
    let summary = json!({
        "rest_to_eventbus_p50_ms": bus.quantile_ms(0.5),
        "rest_to_eventbus_p99_ms": bus.quantile_ms(0.99),
        "rest_to_eventbus_max_ms": bus.quantile_ms(1.0),
        "servicebus_round_trip_p50_ms": sb.quantile_ms(0.5),
        "servicebus_round_trip_p99_ms": sb.quantile_ms(0.99),
        "servicebus_round_trip_max_ms": sb.quantile_ms(1.0),
        "flat_out_messages": a.messages,
        "flat_out_callers": a.callers,
        "flat_out_failed": failures.load(Ordering::Relaxed),
        "flat_out_accepted_per_sec": (a.messages as f64 / accepted_secs).round(),
        "flat_out_received_per_sec": (want as f64 / all_secs).round(),
        "eventbus_to_rest_p50_ms": up.latency.clone().quantile_ms(0.5),
        "eventbus_to_rest_p99_ms": up.latency.clone().quantile_ms(0.99),
        "eventbus_to_rest_max_ms": up.latency.clone().quantile_ms(1.0),
        "eventbus_to_rest_flat_out_published": a.messages,
        "eventbus_to_rest_flat_out_received_per_sec": up.per_sec.round(),
        "eventbus_to_rest_duplicates": up.duplicates,
        "eventbus_to_rest_sustained_rate": a.up_rate,
        "eventbus_to_rest_sustained_received_per_sec": sustained.as_ref().map(|s| s.per_sec.round()),
        "eventbus_to_rest_sustained_p50_ms": sustained.as_ref().map(|s| s.latency.clone().quantile_ms(0.5)),
        "eventbus_to_rest_sustained_p99_ms": sustained.as_ref().map(|s| s.latency.clone().quantile_ms(0.99)),
        "eventbus_to_rest_sustained_duplicates": sustained.as_ref().map(|s| s.duplicates),
        "kedge_up_rss_ready_mib": rss_ready as f64 / 1024.0,
        "kedge_up_rss_end_mib": rss_end as f64 / 1024.0,
        "kedge_up_rss_peak_mib": hwm as f64 / 1024.0,
    });
    print_summary(&summary, a.json)
}

struct Upstream {
    latency: Latencies,
    per_sec: f64,
    duplicates: usize,
}

/// eventbus → rest: one at a time (MQTT publish → body at the cloud app), then `messages`
/// published flat out, until the app has every one (duplicates counted: at-least-once).
async fn eventbus_to_rest(
    mq: &rumqttc::AsyncClient,
    got: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    samples: usize,
    messages: usize,
) -> anyhow::Result<Upstream> {
    use rumqttc::QoS;
    let publish = |body: String| mq.publish("default/up", QoS::AtLeastOnce, false, body);
    // The edge subscribes once the rule reached it: publish until the first arrives.
    let started = Instant::now();
    loop {
        publish("warmup".into()).await?;
        if recv(got, Duration::from_millis(200)).await.is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("eventbus → rest not in effect after 60 s");
        }
    }
    while recv(got, Duration::from_millis(300)).await.is_some() {}
    let mut latency = Latencies::default();
    for i in 0..samples {
        let body = format!("up-{i}");
        let t = Instant::now();
        publish(body.clone()).await?;
        loop {
            let (at, b) = recv(got, Duration::from_secs(10))
                .await
                .context("eventbus → rest: the body at the cloud app within 10 s")?;
            if b == body.as_bytes() {
                latency.push(at - t);
                break;
            }
        }
        if (i + 1) % 100 == 0 {
            progress("eventbus → rest", i + 1, samples);
        }
    }
    eprintln!();
    let started = Instant::now();
    for i in 0..messages {
        publish(format!("flat-up-{i}")).await?;
    }
    let mut seen = std::collections::HashSet::with_capacity(messages);
    let mut duplicates = 0;
    while seen.len() < messages {
        let (_, b) = recv(got, Duration::from_secs(30))
            .await
            .with_context(|| format!("eventbus → rest: {} of {messages} arrived", seen.len()))?;
        if !seen.insert(b) {
            duplicates += 1;
        }
        if seen.len() % 5000 == 0 {
            progress("eventbus → rest flat out", seen.len(), messages);
        }
    }
    eprintln!();
    Ok(Upstream {
        latency,
        per_sec: messages as f64 / started.elapsed().as_secs_f64(),
        duplicates,
    })
}

async fn recv<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>, limit: Duration) -> Option<T> {
    tokio::time::timeout(limit, rx.recv()).await.ok().flatten()
}

/// eventbus → rest at a fixed `rate` for `secs`: each message timed from its publish to its
/// arrival at the cloud app; the rate the app received them at, first publish to last arrival.
async fn sustained_upstream(
    mq: &rumqttc::AsyncClient,
    got: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Upstream> {
    let total = (rate * secs) as usize;
    let publisher = {
        let mq = mq.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut sent_at = Vec::with_capacity(total);
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while sent_at.len() < total {
                tick.tick().await;
                // Everything due by now (the ticker may lag; the rate holds on average).
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
                while sent_at.len() < due {
                    let body = format!("rate-{}", sent_at.len());
                    sent_at.push(Instant::now());
                    mq.publish("default/up", rumqttc::QoS::AtLeastOnce, false, body)
                        .await?;
                }
            }
            anyhow::Ok(sent_at)
        })
    };
    let mut arrived: Vec<Option<Instant>> = vec![None; total];
    let (mut count, mut duplicates) = (0, 0);
    while count < total {
        let (at, b) = recv(got, Duration::from_secs(30))
            .await
            .with_context(|| format!("eventbus → rest at {rate}/s: {count} of {total} arrived"))?;
        let i = std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.strip_prefix("rate-"))
            .and_then(|n| n.parse::<usize>().ok());
        match i.and_then(|i| arrived.get_mut(i)) {
            Some(slot @ None) => {
                *slot = Some(at);
                count += 1;
                if count % 10_000 == 0 {
                    progress("eventbus → rest sustained", count, total);
                }
            }
            Some(Some(_)) => duplicates += 1,
            None => {}
        }
    }
    eprintln!();
    let sent_at = publisher.await??;
    let mut latency = Latencies::default();
    for (sent, at) in sent_at.iter().zip(&arrived) {
        if let Some(at) = at {
            latency.push(at.saturating_duration_since(*sent));
        }
    }
    let last = arrived
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let first = sent_at.first().copied().unwrap_or(last);
    Ok(Upstream {
        latency,
        per_sec: total as f64 / (last - first).as_secs_f64(),
        duplicates,
    })
}
