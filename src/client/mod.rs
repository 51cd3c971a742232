//! `roomcast client URL [--room R] [--nick N]`: the command-line client.
//!
//! In a terminal it is interactive: typed lines go to the current room,
//! `/join`, `/leave`, `/nick`, `/rooms`, `/members` and `/quit` do what they
//! say, and incoming messages are shown with time and nick. When standard
//! input or output is not a terminal it is for scripts: each input line is
//! published (or is a command), each frame from the server is printed as one
//! JSON line, and at the end of input it waits for every publish to be
//! acknowledged and exits. Both reconnect and recover what they missed (see
//! [`session`]). The exit status is 1 when a request may not have reached
//! the server (not sent while disconnected, or never answered), 2 for a bad
//! URL or `--ca`, 0 otherwise.

pub mod lines;
pub mod pipe;
pub mod session;
pub mod terminal;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use tokio::sync::mpsc;

use crate::dial::{Credentials, Dialer, endpoint};
use session::Setup;

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Server URL, e.g. ws://127.0.0.1:8080 (/ws is added when there is no path).
    pub url: String,
    /// Join this room at start and make it current.
    #[arg(long)]
    pub room: Option<String>,
    /// Set this nick at start.
    #[arg(long)]
    pub nick: Option<String>,
    /// Messages of history to show when joining a room.
    #[arg(long, default_value_t = 20)]
    pub history: u64,
    /// For wss:// URLs: also trust the certificates in this PEM file (a
    /// self-signed server certificate or a private CA).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// A connection token (when the server has `[auth]` on), sent as
    /// `Authorization: Bearer`. Refused (close 1008): the client exits 1
    /// rather than reconnect.
    #[arg(long)]
    pub token: Option<String>,
}

pub fn run(args: ClientArgs) -> ExitCode {
    let url = match endpoint(&args.url, "/ws") {
        Ok(url) => url,
        Err(problem) => {
            eprintln!("roomcast client: {problem}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roomcast client: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    runtime.block_on(async {
        let dialer = match Dialer::new(url, 1, args.ca.as_deref()).await {
            Ok(dialer) => dialer.with_credentials(args.token.map_or(Credentials::None, Credentials::Token)),
            Err(e) => {
                eprintln!("roomcast client: {}: {e}", args.url);
                return ExitCode::from(2);
            }
        };
        let (command_tx, command_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::channel(4096);
        let setup = Setup { room: args.room, nick: args.nick, history: args.history };
        let connection = tokio::spawn(session::run(dialer, setup, command_rx, event_tx));
        let code =
            if interactive { terminal::run(command_tx, event_rx).await } else { pipe::run(command_tx, event_rx).await };
        let Ok(outcome) = connection.await else { return ExitCode::from(1) };
        if let Some(why) = &outcome.stopped {
            eprintln!("roomcast client: {why}; not reconnecting");
            return ExitCode::from(1);
        }
        if let Some(why) = &outcome.refused {
            eprintln!("roomcast client: the server refused this connection ({why}); not reconnecting");
            return ExitCode::from(1);
        }
        if outcome.undelivered > 0 {
            // A script that notifies a room must know it did not.
            eprintln!("roomcast client: {} requests may not have reached the server", outcome.undelivered);
            return ExitCode::from(1);
        }
        code
    })
}
