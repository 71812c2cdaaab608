//! The `tessera` binary.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_server::{config::Config, open_homeserver};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "tessera", version, about = "A Matrix homeserver")]
struct Cli {
    /// TOML configuration file; TESSERA_* environment variables override it.
    #[arg(
        long,
        short,
        global = true,
        env = "TESSERA_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage registration tokens.
    RegistrationToken {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Apply pending database migrations and exit.
    Migrate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints its ID (and the password, when generated).
    Create {
        /// Localpart (`alice`) or full ID (`@alice:example.org`).
        name: String,
        #[arg(long)]
        admin: bool,
        /// Password; a random one is generated and printed when absent.
        #[arg(long)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a registration token and print it.
    Create {
        /// How many registrations it allows; unlimited when absent.
        #[arg(long)]
        uses: Option<i64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tessera_server::memory::tune_allocator();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    init_tracing(&config.log)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::User {
            command:
                UserCommand::Create {
                    name,
                    admin,
                    password,
                },
        } => {
            let hs = open_homeserver(&config).await?;
            let localpart = if name.starts_with('@') {
                let id = hs.parse_user_localpart_or_id(&name)?;
                id.localpart().to_owned()
            } else {
                name
            };
            let generated = password.is_none();
            let password =
                password.unwrap_or_else(|| tessera_core::accounts::tokens::random_string(24));
            let user = hs
                .create_user(&localpart, Some(&password), admin)
                .await
                .with_context(|| format!("creating user {localpart:?}"))?;
            println!("{user}");
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
        Command::RegistrationToken {
            command: TokenCommand::Create { uses },
        } => {
            if uses.is_some_and(|n| n < 1) {
                anyhow::bail!("--uses must be at least 1");
            }
            let hs = open_homeserver(&config).await?;
            println!("{}", hs.create_registration_token(uses).await?);
            Ok(())
        }
        Command::Migrate => {
            let db = tessera_server::db::connect(
                &config.database_url(),
                config.database.sqlite_synchronous,
            )
            .await?;
            let applied = tessera_core::storage::migrate(db.as_ref()).await?;
            println!("applied {applied} migration(s)");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = tessera_server::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_tracing(log: &str) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(log).with_context(|| format!("invalid log filter {log:?}"))?,
    };
    // Logs go to stderr so command output on stdout stays clean.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}
