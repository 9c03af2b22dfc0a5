use anyhow::Context;
use control_plane::object_store::ObjectStore;
use control_plane::store::Store;
use control_plane::{Config, ControlPlane, migrate};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage:
  control-plane                                        serve (settings from the environment; see README)
  control-plane migrate-store --from URL --to URL      copy all runs, code bundles and archived logs
      --from sqlite://./data/fastflow.db --to postgres://user:pw@host/db
      Logs are read from LOGS_DIR (default ./logs) and written to the S3 store named by
      S3_ENDPOINT/S3_BUCKET/AWS_* (without those, logs stay in LOGS_DIR). Safe to run again.
  control-plane user create NAME --role admin|operator|viewer [--password-file PATH]
      add a user to the store of DATABASE_URL (default: SQLite in DATA_DIR); the password
      (at least 12 characters) comes from the file, or else from stdin (one trailing newline dropped)
  control-plane token create --user NAME --name TOKEN_NAME [--role R] [--expires-in 30d]
      create an API token for NAME (role at most NAME's; default: NAME's) and print it, once, on stdout
  control-plane nats-setup
      print a new NATS_AUTH_CALLOUT_SEED and a NATS server configuration for it (TLS, JetStream,
      runner authentication through this control plane); see README \"Distributed mode\"";

#[tokio::main]
async fn main() {
    // One line per failure (the causes chained), whatever RUST_BACKTRACE says.
    if let Err(e) = run().await {
        eprintln!("control-plane: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    control_plane::telemetry::init();
    // Both rustls providers are linked; NATS TLS uses the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("nats-setup") {
        // Needs no settings: it prints what the settings will be.
        print!("{}", control_plane::runner_identity::callout::setup_text()?);
        return Ok(());
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("control-plane: configuration error: {e}");
            std::process::exit(2);
        }
    };
    match args.first().map(String::as_str) {
        None => serve(config).await,
        Some("migrate-store") => migrate_store(config, &args[1..]).await,
        Some("user") => usage_errors(control_plane::cli::user(&config, &args[1..]).await),
        Some("token") => usage_errors(control_plane::cli::token(&config, &args[1..]).await),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("control-plane: unknown command `{other}`\n{USAGE}");
            std::process::exit(2);
        }
    }
}

/// A command line the `user`/`token` commands cannot use: the message and the usage, exit 2.
fn usage_errors(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = &result
        && let Some(usage) = e.downcast_ref::<control_plane::cli::UsageError>()
    {
        eprintln!("control-plane: {usage}\n{USAGE}");
        std::process::exit(2);
    }
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let control_plane = ControlPlane::connect(config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        control_plane::telemetry::shutdown_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    control_plane.run(shutdown).await.context("control plane stopped")
}

async fn migrate_store(config: Config, args: &[String]) -> anyhow::Result<()> {
    let (mut from, mut to) = (None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--from" => from = rest.next().cloned(),
            "--to" => to = rest.next().cloned(),
            _ => {
                eprintln!("control-plane migrate-store: unexpected argument `{arg}`\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        eprintln!("control-plane migrate-store: both --from and --to are required\n{USAGE}");
        std::process::exit(2);
    };
    let redact = control_plane::config::redact_url;
    if from == to {
        anyhow::bail!("--from and --to name the same store ({})", redact(&from));
    }
    // The source must exist (connecting would create an empty SQLite file) and no node may
    // be using it meanwhile (it holds the lock of the directory the file is in).
    let _source_lock = match from.strip_prefix("sqlite://") {
        Some(path) => {
            let path = std::path::Path::new(path);
            if !path.is_file() {
                anyhow::bail!("--from {}: no such SQLite file", path.display());
            }
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            Some(control_plane::startup::lock_data_dir(dir).context("--from: stop the node using it first")?)
        }
        None => None,
    };
    let source = Store::connect(&from).await.with_context(|| format!("--from {}", redact(&from)))?;
    let target = Store::connect(&to).await.with_context(|| format!("--to {}", redact(&to)))?;
    let logs = match &config.s3 {
        Some(s3) => {
            let src = ObjectStore::local(config.logs_dir.clone()).context("LOGS_DIR")?;
            let dst = ObjectStore::connect(s3).await.context("S3_ENDPOINT: cannot use the object store")?;
            println!("logs: from {} to {}", src.describe(), dst.describe());
            Some((src, dst))
        }
        None => {
            println!("logs: staying in {} (set S3_ENDPOINT/S3_BUCKET to move them to S3)", config.logs_dir.display());
            None
        }
    };
    println!("store: from {} ({}) to {} ({})", redact(&from), source.kind(), redact(&to), target.kind());
    let totals = migrate::migrate(&source, &target, logs.as_ref().map(|(s, d)| (s, d)), &mut |t| {
        println!("migrate-store: {t}");
    })
    .await?;
    println!("migrate-store: done: {totals}");
    Ok(())
}
