//! The `weir` binary: wiring only. See the library crate for everything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use weir_host::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(name = "weir", version, about = "Weir service host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (SQLite in --data-dir unless DATABASE_URL is set).
    Serve(CommonArgs),
    /// Apply database migrations and exit.
    Migrate(CommonArgs),
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// API listen address (port 0 picks a free port).
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Operations listen address (health, info).
    #[arg(long, env = "WEIR_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// Directory for the embedded database.
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL for production; SQLite in the data directory when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Bearer token of the admin endpoints (disabled when unset).
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl CommonArgs {
    fn load(self) -> Result<Config, String> {
        Config::load(&Overrides {
            config_file: self.config,
            listen: self.listen,
            ops_listen: self.ops_listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            admin_token: self.admin_token,
        })
        .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Validate a component against the weir:orders world and run its describe self-test.
    Check {
        /// The component file.
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            weir_host::telemetry::init_logging();
            let config = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "invalid configuration");
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let server = match weir_host::server::Server::start(config).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "start-up failed");
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            wait_for_signal().await;
            tracing::info!("shutdown requested; draining");
            server.shutdown(Duration::from_secs(10)).await;
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Command::Migrate(args) => {
            weir_host::telemetry::init_logging();
            let config = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if config.database_url.is_none()
                && let Err(e) = config.ensure_data_dir()
            {
                eprintln!("error: cannot create {}: {e}", config.data_dir.display());
                return ExitCode::FAILURE;
            }
            let url = config.effective_database_url();
            let result = async {
                let store = weir_host::storage::connect(
                    url.expose(),
                    &weir_host::storage::StoreOptions::default(),
                )
                .await?;
                store.migrate().await?;
                store.close().await;
                Ok::<_, weir_host::storage::StoreError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    println!("migrations applied to {}", url.redacted());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", url.redacted());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin {
            command: PluginCommand::Check { file, json },
        } => match weir_host::plugin_check::check(&file).await {
            Ok(report) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    print!("{report}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
