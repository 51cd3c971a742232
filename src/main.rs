//! The `roomcast` command: parses the command line, then calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use roomcast::Settings;
use roomcast::config::ConfigSource;

/// A realtime WebSocket room server.
#[derive(Parser)]
#[command(name = "roomcast", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Validate the configuration and print the effective settings as TOML.
    CheckConfig(ConfigArgs),
    /// Load-test a server that speaks the roomcast protocol.
    Load(Box<roomcast::load::LoadArgs>),
    /// A command-line client: interactive in a terminal, JSON lines in a pipe.
    Client(roomcast::client::ClientArgs),
    /// Print a token signed with the configured auth.hmac_secret (for
    /// development and tests).
    Token(roomcast::auth::mint::TokenArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// Configuration file [default: config/roomcast.toml when it exists].
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// Exit status for a bad configuration.
const CONFIG_ERROR: u8 = 2;

fn load(args: &ConfigArgs) -> Result<(Settings, ConfigSource), ExitCode> {
    Settings::load(args.config.as_deref(), roomcast::live::CHECKS).map_err(|error| {
        eprintln!("roomcast: configuration error: {error}");
        ExitCode::from(CONFIG_ERROR)
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => {
            let (settings, source) = match load(&args) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            roomcast::logging::init(&settings.log.level);
            log::info!("config: {source}");
            match roomcast::server::run(settings, args.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error @ roomcast::server::ServeError::Config(_)) => {
                    eprintln!("roomcast: {error}");
                    ExitCode::from(CONFIG_ERROR)
                }
                Err(error) => {
                    eprintln!("roomcast: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(args) => {
            roomcast::logging::init("warn");
            roomcast::client::run(args)
        }
        Command::Load(args) => {
            roomcast::logging::init("warn");
            roomcast::load::run(*args)
        }
        Command::Token(args) => roomcast::auth::mint::run(args),
        Command::CheckConfig(args) => match load(&args) {
            Ok((settings, source)) => {
                print!("# config: {source}\n{}", settings.to_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}
