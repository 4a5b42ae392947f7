//! `kedge`: one binary, thin over the library crates.

mod cli;
mod demo;
mod trim;

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
    init_logs();
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(cli::run(args))
}

/// Logs to stderr, filtered by `RUST_LOG` (`warn`, `info,kedge_edge=debug`, … : a level, or
/// `target=level` pairs), `info` by default. (`Targets` rather than an `EnvFilter`: it needs no
/// regular-expression engine, which an edge would carry in memory for nothing.)
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = tracing_subscriber::filter::Targets::new()
        .with_default(tracing_subscriber::filter::LevelFilter::INFO);
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.parse::<tracing_subscriber::filter::Targets>() {
            Ok(t) => (t, None),
            Err(e) => (
                default,
                Some(format!(
                    "RUST_LOG={v:?} is not a level or target=level list ({e}); logging at info"
                )),
            ),
        },
        _ => (default, None),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    tracing_subscriber::registry().with(fmt).with(filter).init();
    if let Some(why) = bad {
        tracing::warn!("{why}");
    }
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
