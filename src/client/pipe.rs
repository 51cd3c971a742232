//! The client for scripts: lines in, JSON lines out.

use std::process::ExitCode;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::session::{Command, Event, parse_line};

pub async fn run(commands: mpsc::Sender<Command>, mut events: mpsc::Receiver<Event>) -> ExitCode {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) if line.is_empty() => {}
                Ok(Some(line)) => match parse_line(&line) {
                    Ok(command) => {
                        let _ = commands.send(command).await;
                    }
                    Err(problem) => eprintln!("roomcast client: {problem}"),
                },
                // End of input: finish once everything sent is acknowledged.
                Ok(None) | Err(_) => {
                    input_open = false;
                    let _ = commands.send(Command::Quit { wait: true }).await;
                }
            },
            event = events.recv() => match event {
                Some(Event::Frame(value)) => println!("{value}"),
                Some(Event::Notice(text)) => eprintln!("roomcast client: {text}"),
                Some(Event::Connected(url)) => eprintln!("roomcast client: connected to {url}"),
                Some(Event::Disconnected { why, retry_in }) => {
                    eprintln!("roomcast client: disconnected ({why}); reconnecting in {:.1}s", retry_in.as_secs_f64());
                }
                Some(Event::Current(_)) => {}
                None => return ExitCode::SUCCESS,
            },
        }
    }
}
