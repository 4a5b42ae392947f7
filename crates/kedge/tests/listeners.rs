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

/// `openssl s_client` against `port` with `flags`: (handshake completed, its output).
fn handshake(port: u16, flags: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A completed handshake names its cipher; a refused one says "Cipher is (NONE)" or errs.
    let done = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (done, text)
}

#[test]
fn tls_below_1_2_weak_suites_and_the_hub_without_a_client_certificate_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::cloud(dir.path());
    // Old protocol versions (the client even lowers its own security level to offer them).
    let old = ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"];
    // TLS 1.2 with only suites without forward secrecy or with CBC.
    let weak = [
        "-tls1_2",
        "-cipher",
        "AES128-SHA:AES256-SHA:AES128-GCM-SHA256",
    ];
    for (name, port) in [
        ("API", k.port),
        ("join server", k.join_port),
        ("CloudHub", k.hub_port),
    ] {
        let (done, text) = handshake(port, &old);
        assert!(!done, "{name} accepted TLS 1.1:\n{text}");
        let (done, text) = handshake(port, &weak);
        assert!(!done, "{name} accepted a weak suite:\n{text}");
    }
    // Modern TLS 1.2 and 1.3 are accepted where no client certificate is needed …
    for port in [k.port, k.join_port] {
        for v in ["-tls1_2", "-tls1_3"] {
            let (done, text) = handshake(port, &[v]);
            assert!(done, "{v} refused on {port}:\n{text}");
        }
    }
    // … and CloudHub ends any session that brings no client certificate.
    for v in ["-tls1_2", "-tls1_3"] {
        let (_, text) = handshake(k.hub_port, &[v, "-ign_eof"]);
        assert!(
            text.contains("alert certificate required"),
            "CloudHub without a client certificate ({v}):\n{text}"
        );
    }
}
