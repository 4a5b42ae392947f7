//! The kubelet API's stream paths as kube-apiserver calls them, read into the pod and the
//! embedded API's subresource and query (kubelet names exec's streams `input`, `output` and
//! `error` where the API says `stdin`, `stdout` and `stderr`).

/// One call to the kubelet API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub namespace: String,
    pub pod: String,
    /// The pod's UID when the path carries one (kubelet refuses a pod that does not match).
    pub uid: Option<String>,
    /// `log`, `exec`, `attach` or `portforward`, as the API's pod subresources.
    pub subresource: &'static str,
    /// The API's query parameters for the subresource (the container included).
    pub query: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("no such kubelet path: {0}")]
    Unknown(String),
}

/// Reads `path` (percent-decoded segments) and `query` into a [`Call`].
pub fn parse(path: &str, query: Vec<(String, String)>) -> Result<Call, PathError> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let unknown = || PathError::Unknown(path.to_string());
    if segs.iter().any(String::is_empty) {
        return Err(unknown());
    }
    let (sub, rest) = match segs.split_first() {
        Some((s, rest)) => (s.as_str(), rest),
        None => return Err(unknown()),
    };
    // (namespace, pod, uid, container)
    let parts = match (sub, rest) {
        ("containerLogs", [ns, pod, c]) => (ns, pod, None, Some(c)),
        ("exec" | "attach", [ns, pod, c]) => (ns, pod, None, Some(c)),
        ("exec" | "attach", [ns, pod, uid, c]) => (ns, pod, Some(uid), Some(c)),
        ("portForward", [ns, pod]) => (ns, pod, None, None),
        ("portForward", [ns, pod, uid]) => (ns, pod, Some(uid), None),
        _ => return Err(unknown()),
    };
    let subresource = match sub {
        "containerLogs" => "log",
        "exec" => "exec",
        "attach" => "attach",
        _ => "portforward",
    };
    let (ns, pod, uid, container) = parts;
    let mut query: Vec<(String, String)> = query
        .into_iter()
        .filter(|(k, _)| k != "container")
        .map(|(k, v)| (api_name(subresource, k), v))
        .collect();
    if let Some(c) = container {
        query.push(("container".into(), c.clone()));
    }
    Ok(Call {
        namespace: ns.clone(),
        pod: pod.clone(),
        uid: uid.cloned(),
        subresource,
        query,
    })
}

/// The API's name for a kubelet query parameter.
fn api_name(subresource: &str, key: String) -> String {
    if !matches!(subresource, "exec" | "attach") {
        return key;
    }
    match key.as_str() {
        "input" => "stdin".into(),
        "output" => "stdout".into(),
        "error" => "stderr".into(),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exec_reads_kubelets_stream_names_as_the_apis() {
        let call = parse(
            "/exec/default/web/c",
            q(&[
                ("command", "sh"),
                ("command", "-c"),
                ("input", "1"),
                ("output", "1"),
                ("error", "1"),
                ("tty", "1"),
            ]),
        )
        .expect("exec");
        assert_eq!(call.subresource, "exec");
        assert_eq!(
            (call.namespace.as_str(), call.pod.as_str()),
            ("default", "web")
        );
        assert_eq!(
            call.query,
            q(&[
                ("command", "sh"),
                ("command", "-c"),
                ("stdin", "1"),
                ("stdout", "1"),
                ("stderr", "1"),
                ("tty", "1"),
                ("container", "c")
            ])
        );
        let with_uid = parse("/attach/ns/p/u-1/c", q(&[])).expect("attach with a UID");
        assert_eq!(with_uid.uid.as_deref(), Some("u-1"));
        assert_eq!(with_uid.subresource, "attach");
    }

    #[test]
    fn logs_keep_their_query_and_the_path_names_the_container() {
        let call = parse(
            "/containerLogs/kube-system/p%2Dx/app",
            q(&[
                ("follow", "true"),
                ("tailLines", "5"),
                ("container", "other"),
            ]),
        )
        .expect("logs");
        assert_eq!(call.subresource, "log");
        assert_eq!(call.pod, "p-x");
        assert_eq!(
            call.query,
            q(&[("follow", "true"), ("tailLines", "5"), ("container", "app")])
        );
    }

    #[test]
    fn port_forward_and_unknown_paths() {
        let call = parse("/portForward/default/web", q(&[])).expect("port-forward");
        assert_eq!(call.subresource, "portforward");
        assert!(call.query.is_empty());
        for bad in [
            "/",
            "/run/default/web/c",
            "/exec/default/web",
            "/containerLogs/default/web",
            "/exec/default//c",
            "/stats/summary",
        ] {
            assert_eq!(
                parse(bad, q(&[])),
                Err(PathError::Unknown(bad.into())),
                "{bad}"
            );
        }
    }
}
