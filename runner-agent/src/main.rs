use runner_agent::agent::Shutdown;
use runner_agent::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal, never in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    // Both rustls providers are linked; NATS TLS uses the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::args().nth(1).as_deref() == Some("watchdog") {
        return watchdog().await;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("runner-agent: configuration error: {e}");
            std::process::exit(2);
        }
    };
    let first = CancellationToken::new();
    let second = CancellationToken::new();
    let (f, s) = (first.clone(), second.clone());
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: draining (send it again to stop running jobs)");
        f.cancel();
        wait_for_signal().await;
        s.cancel();
    });
    runner_agent::agent::run(config, Shutdown::drain_then_stop(first, second)).await
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `runner-agent watchdog`: started by the runner itself (see `runner_agent::watchdog`).
/// It outlives signals meant for the runner (a terminal's Ctrl-C reaches the whole
/// process group): the runner ends it when it stops cleanly.
async fn watchdog() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installing handlers replaces the default action (exit) for good.
    let _interrupt = signal(SignalKind::interrupt())?;
    let _terminate = signal(SignalKind::terminate())?;
    let config = Config::from_env().map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let code = runner_agent::watchdog::watch(&config.runner_id, &config.data_dir).await?;
    std::process::exit(code);
}
