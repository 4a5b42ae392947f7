//! `kedge`: one binary, thin over the library crates.

mod cli;
mod demo;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; no backtrace for users.
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The cause chain joined with ": ", skipping a cause its wrapper already quoted (errors that
/// print their source, as `#[error("joining the cloud: {0}")]` does, would repeat it).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn run() -> anyhow::Result<()> {
    // ring is the only TLS provider compiled in; install it before anything builds a config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(cli::run(args))
}

/// Every edge holds a connection at the cloud: the usual soft limit of 1,024 open files would
/// cap a cloud near a thousand edges. Raise it to the hard limit, as Go programs do at start.
fn raise_open_files_limit() {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    let want = hard.min(1 << 20);
    if soft < want {
        match rlimit::setrlimit(rlimit::Resource::NOFILE, want, hard) {
            Ok(()) => tracing::debug!(from = soft, to = want, "open-files limit raised"),
            Err(e) => tracing::warn!(soft, error = %e, "open-files limit not raised"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("the token is malformed")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("join token: {0}")]
    struct Outer(#[from] Inner);

    #[test]
    fn a_cause_is_said_once() {
        let e = anyhow::Error::from(Outer(Inner)).context("starting the edge");
        assert_eq!(
            super::one_line(&e),
            "starting the edge: join token: the token is malformed"
        );
        let plain = anyhow::anyhow!("disk full").context("writing");
        assert_eq!(super::one_line(&plain), "writing: disk full");
    }
}
