//! Secure by default: every listener binds loopback unless configured otherwise, except the two
//! the edges dial (CloudHub and the join server).

mod common;

use common::Kedge;

#[test]
fn kedge_cloud_listens_on_loopback_except_where_edges_dial_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::cloud_default_binds(dir.path());
    let at = |name: &str| k.endpoints[name].clone();
    // The printed addresses are the listeners' own (`local_addr`), not the configuration.
    for (name, scheme) in [
        ("Kubernetes API", "https"),
        ("router", "http"),
        ("metrics", "http"),
    ] {
        assert!(
            at(name).starts_with(&format!("{scheme}://127.0.0.1:")),
            "{name} listens on {}",
            at(name)
        );
    }
    assert!(
        at("CloudHub").starts_with("wss://0.0.0.0:"),
        "{}",
        at("CloudHub")
    );
    assert!(
        at("join server").starts_with("https://0.0.0.0:"),
        "{}",
        at("join server")
    );
}
