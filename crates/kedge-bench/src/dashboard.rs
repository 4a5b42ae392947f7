//! The dashboard over a fleet, in a real headless Chromium: how soon the fleet page shows its
//! first rows (after signing in, and on a reload), how long until every node is listed, and
//! what one page of nodes through the dashboard costs the browser.

use std::time::Duration;

use anyhow::Context;
use kedge_browser::Browser;
use serde_json::{Value, json};

/// The fleet page's marks (`performance.mark` in the page's script).
const FIRST_ROWS: &str = "kedge-fleet-first-rows";
const LISTED: &str = "kedge-fleet-listed";

/// The bearer token in a kubeconfig kedge wrote.
pub fn kubeconfig_token(kubeconfig: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(kubeconfig)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_string())
        .with_context(|| format!("no token in {}", kubeconfig.display()))
}

/// Signs in at `url` with `token` and times the fleet page of `nodes` nodes.
pub fn measure(url: &str, token: &str, nodes: usize) -> anyhow::Result<Value> {
    let shots = tempfile::tempdir()?;
    let mut b = Browser::launch(shots.path())?;
    b.goto(url)?;
    b.type_into("#token", token)?;
    b.click("#signin")?;
    let first = mark(&mut b, FIRST_ROWS, Duration::from_secs(60))?;
    let steps = b.eval(STEPS)?;
    let listed = mark(&mut b, LISTED, Duration::from_secs(600))?;
    let total = b.text("#total-nodes")?.unwrap_or_default();
    anyhow::ensure!(
        total == nodes.to_string(),
        "the page counts {total} nodes, not {nodes}"
    );
    b.goto(url)?;
    let again = mark(&mut b, FIRST_ROWS, Duration::from_secs(60))?;
    let fetches = b.eval(
        "(async () => { const t = []; for (let i = 0; i < 21; i++) { \
           const s = performance.now(); const r = await fetch('/k8s/api/v1/nodes?limit=100'); \
           await r.json(); t.push(performance.now() - s); } \
         t.sort((a, b) => a - b); return [t[10], t[20]]; })()",
    )?;
    Ok(json!({
        "first_rows_after_sign_in_ms": first,
        "after_sign_in_steps_ms": steps,
        "first_rows_on_reload_ms": again,
        "all_nodes_listed_ms": listed,
        "page_of_100_nodes_fetch_ms_p50": round(&fetches[0]),
        "page_of_100_nodes_fetch_ms_max": round(&fetches[1]),
    }))
}

/// Where the time to the first rows went: the sign-in and the page (the navigation), the
/// script, the first page of nodes (its request's start and end).
const STEPS: &str = "(() => { const n = performance.getEntriesByType('navigation')[0] || {}; \
  const r = (p) => performance.getEntriesByType('resource').find((e) => e.name.includes(p)) || {}; \
  const f = (v) => Math.round((v || 0) * 10) / 10; const nodes = r('/k8s/api/v1/nodes?limit=100'); \
  return { redirect_end: f(n.redirectEnd), page_loaded: f(n.responseEnd), \
    script_loaded: f(r('/app.js').responseEnd), nodes_requested: f(nodes.startTime), \
    nodes_received: f(nodes.responseEnd) }; })()";

/// When the page made mark `name`, in ms from its navigation's start.
fn mark(b: &mut Browser, name: &str, within: Duration) -> anyhow::Result<f64> {
    let expr = format!(
        "(performance.getEntriesByName({}).map(e => e.startTime)[0] || null)",
        json!(name)
    );
    let at = b.wait_within(within, name, &expr)?;
    Ok(round(&at).as_f64().unwrap_or_default())
}

fn round(v: &Value) -> Value {
    json!((v.as_f64().unwrap_or_default() * 10.0).round() / 10.0)
}
