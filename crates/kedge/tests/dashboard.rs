//! The dashboard in a real headless Chromium against `kedge up --demo`: sign-in (a wrong token
//! is refused on the sign-in page), the fleet with the node Ready, the seed's counter set to ON
//! from the page and counting on the page, a router call raising the rule's counter on the page,
//! a `<script>` value shown as text. Screenshots of each page go to
//! `target/tmp/dashboard/` (Cargo's test output directory) for review.

mod common;

use std::time::Duration;

use common::Kedge;
use kedge_browser::{Browser, BrowserError};
use serde_json::json;

fn example(name: &str) -> String {
    common::examples().join(name).display().to_string()
}

/// The JavaScript for the text of cell `col` in row `key` of table `table`.
fn cell(table: &str, key: &str, col: &str) -> String {
    let sel = format!("#{table} tr[data-key={}] td[data-col={col}]", json!(key));
    format!(
        "(document.querySelector({}) || {{}}).textContent",
        json!(sel)
    )
}

/// The token of the kubeconfig kedge wrote: what an operator signs in with.
fn admin_token(up: &Kedge) -> String {
    let jsonpath = "jsonpath={.users[0].user.token}";
    up.ok(&["config", "view", "--raw", "-o", jsonpath])
        .trim()
        .to_string()
}

/// What the page shows in that cell now.
fn read(b: &mut Browser, table: &str, key: &str, col: &str) -> Result<String, BrowserError> {
    Ok(b.eval(&cell(table, key, col))?
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn the_dashboard_in_a_real_browser() -> Result<(), BrowserError> {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up_with(dir.path(), 0, &["--demo"]);
    let url = up.endpoints["dashboard"].clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let token = admin_token(&up);
    up.ok(&[
        "apply",
        "-f",
        &example("ruleEndpoint-rest.yaml"),
        "-f",
        &example("ruleEndpoint-eventbus.yaml"),
        "-f",
        &example("rule-rest-eventbus.yaml"),
    ]);
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let mut b = Browser::launch(&shots)?;

    // A wrong token: the sign-in page again, with the error.
    b.goto(&url)?;
    b.wait_for("the sign-in form", "document.querySelector('#token')")?;
    b.screenshot("1-sign-in")?;
    b.type_into("#token", "not-a-token")?;
    b.click("#signin")?;
    let error = b.wait_for(
        "the sign-in error",
        "document.querySelector('#error') && document.querySelector('#error').textContent",
    )?;
    assert_eq!(error, "The Kubernetes API did not accept that token.");
    assert!(b.text("#token")?.is_some(), "still the sign-in form");
    b.screenshot("2-sign-in-refused")?;

    // The admin token: the fleet, the node Ready.
    b.type_into("#token", &token)?;
    b.click("#signin")?;
    b.wait_for(
        "kube-edge-1 Ready on the fleet page",
        &format!("{} === 'Ready'", cell("fleet", "kube-edge-1", "ready")),
    )?;
    let version = read(&mut b, "fleet", "kube-edge-1", "version")?;
    assert!(version.contains("kedge"), "{version}");
    b.wait_for(
        "the demo's two devices counted on the node",
        &format!("{} === '2'", cell("fleet", "kube-edge-1", "devices")),
    )?;
    b.wait_for(
        "the totals",
        "document.querySelector('#total-ready').textContent === '1'",
    )?;
    // The session cookie is HttpOnly: the page's scripts cannot read it.
    assert_eq!(b.eval("document.cookie")?, json!(""));
    b.wait_for(
        "a point on the chart: one node connected, from the cloud's metrics",
        "document.querySelector('#chart').dataset.connected === '1'",
    )?;
    b.screenshot("3-fleet")?;

    // The node's page.
    b.click("#fleet tr[data-key=\"kube-edge-1\"] td[data-col=name] a")?;
    b.wait_for(
        "the node's devices",
        "document.querySelectorAll('#node-devices tbody tr').length === 2",
    )?;
    b.screenshot("4-node")?;

    // The seed's counter: desired OFF; ON from the page makes the reported value count up.
    b.goto(&format!("{url}#/devices"))?;
    let counter = "default/counter/status";
    b.wait_for(
        "the counter's desired value",
        &format!("{} === 'OFF'", cell("devices", counter, "desired")),
    )?;
    let before: u64 = read(&mut b, "devices", counter, "reported")?
        .parse()
        .expect("a count");
    b.screenshot("5-devices-off")?;
    let row = format!("#devices tr[data-key={}]", json!(counter));
    b.type_into(&format!("{row} td[data-col=edit] input"), "ON")?;
    b.click(&format!("{row} td[data-col=edit] button"))?;
    b.wait_for(
        "desired ON on the page",
        &format!("{} === 'ON'", cell("devices", counter, "desired")),
    )?;
    // Counting: the page shows two new values in turn, each from the watch.
    let mut last = before;
    for _ in 0..2 {
        let shown = b.wait_within(
            Duration::from_secs(30),
            "the reported count to go up on the page",
            &format!(
                "(() => {{ const n = Number({}); return n > {last} ? n : null; }})()",
                cell("devices", counter, "reported")
            ),
        )?;
        last = shown.as_u64().expect("a count");
    }
    assert!(!read(&mut b, "devices", counter, "reported-at")?.is_empty());
    b.screenshot("6-devices-counting")?;

    // A value with markup in it is shown as text, and nothing of it runs.
    let evil = "<img src=x onerror=\"window.kedgeXss=1\"><script>window.kedgeXss=2</script>";
    let patch = json!([{"op": "replace", "path": "/status/twins/0/desired/value", "value": evil}]);
    up.ok(&[
        "patch",
        "device",
        "counter",
        "--type=json",
        "-p",
        &patch.to_string(),
    ]);
    b.wait_for(
        "the markup shown as text",
        &format!(
            "{} === {}",
            cell("devices", counter, "desired"),
            json!(evil)
        ),
    )?;
    assert_eq!(b.eval("window.kedgeXss === undefined")?, json!(true));
    assert_eq!(
        b.eval("document.querySelectorAll('#devices img, #devices script').length")?,
        json!(0)
    );
    b.screenshot("7-devices-markup-as-text")?;

    // A router call raises the rule's success counter on the page.
    b.goto(&format!("{url}#/rules"))?;
    let succeeded = cell("rules", "default/my-rule", "success");
    b.wait_for("the rule's row", &format!("{succeeded} !== undefined"))?;
    let before: u64 = read(&mut b, "rules", "default/my-rule", "success")?
        .parse()
        .expect("a count");
    let router = format!("http://127.0.0.1:{}/kube-edge-1/default/a", up.router_port);
    let code = common::http_status(&["-X", "POST", "-d", "{\"hi\":1}", &router]);
    assert_eq!(code, "200");
    b.wait_for(
        "the success counter to go up on the page",
        &format!("Number({succeeded}) > {before}"),
    )?;
    b.screenshot("8-rules")?;

    b.goto(&format!("{url}#/pods"))?;
    b.wait_for("the pods page", "document.querySelector('#pods-where')")?;
    b.screenshot("9-pods")?;
    b.goto(&format!("{url}#/events"))?;
    b.wait_for("the events page", "document.querySelector('#events')")?;
    b.screenshot("10-events")?;
    eprintln!("dashboard screenshots: {}", shots.display());
    Ok(())
}

/// Without a session or token nothing is served but the sign-in page; a bearer token is signed
/// in; the page's writes need its header; only the API's paths pass.
#[test]
fn the_dashboard_lets_in_only_what_the_api_accepts() {
    let dir = tempfile::tempdir().expect("dir");
    let up = Kedge::up(dir.path(), 0);
    let url = up.endpoints["dashboard"].clone();
    let token = admin_token(&up);
    let auth = format!("Authorization: Bearer {token}");
    // The dashboard's certificate is the cloud CA's: curl is told not to check it (-k).
    let curl = |args: &[&str]| common::http_status(&[&["-k"], args].concat());
    let nodes = format!("{url}k8s/api/v1/nodes");
    assert_eq!(curl(&[&nodes]), "401", "no token");
    assert_eq!(curl(&["-H", "Authorization: Bearer nope", &nodes]), "401");
    assert_eq!(curl(&["-H", &auth, &nodes]), "200");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer nope", &url]),
        "401",
        "the sign-in page"
    );
    assert_eq!(
        curl(&[
            "-H",
            &auth,
            &format!("{url}metrics/stream"),
            "--max-time",
            "1"
        ]),
        "200"
    );
    assert_eq!(curl(&[&format!("{url}metrics/stream")]), "401");
    let patch = [
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "-d",
        "{}",
    ];
    let node = format!("{nodes}/kube-edge-1");
    let mut args = vec!["-H", &auth];
    args.extend(patch);
    args.push(&node);
    assert_eq!(curl(&args), "403", "a write without the page's header");
    args.extend(["-H", "x-kedge-dashboard: 1"]);
    assert_eq!(curl(&args), "200");
    assert_eq!(curl(&["-H", &auth, "-X", "DELETE", &node]), "405");
    // Another site's form cannot sign a browser in, even with a good token.
    let form = format!("token={token}");
    let signin = format!("{url}signin");
    let from = |origin: &'static str| curl(&["-H", origin, "-d", &form, &signin]);
    assert_eq!(from("Origin: https://evil.example"), "403");
    let own = format!("Origin: {}", url.trim_end_matches('/'));
    assert_eq!(curl(&["-H", &own, "-d", &form, &signin]), "303");
    assert_eq!(curl(&["-H", &auth, &format!("{url}k8s/healthz")]), "404");
    assert_eq!(
        curl(&[
            "-H",
            &auth,
            "--path-as-is",
            &format!("{url}k8s/api/../healthz")
        ]),
        "404"
    );
}
