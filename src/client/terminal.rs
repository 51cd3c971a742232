//! The interactive client: a line editor at the bottom, messages printed
//! above it as they come.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use chrono::{Local, TimeZone};
use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::session::{Command, Event, parse_line};

/// A body as people read it: strings as they are, anything else as JSON.
fn body_text(body: &Value) -> String {
    match body {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn clock(ts: Option<i64>) -> String {
    let at = ts.and_then(|ms| Local.timestamp_millis_opt(ms).single()).unwrap_or_else(Local::now);
    at.format("%H:%M:%S").to_string()
}

fn who(value: &Value) -> String {
    value["nick"]
        .as_str()
        .map_or_else(|| value["from"].as_str().or(value["id"].as_str()).unwrap_or("?").to_string(), str::to_string)
}

fn message_line(m: &Value) -> String {
    format!("{} [{}] {}: {}", clock(m["ts"].as_i64()), m["room"].as_str().unwrap_or("?"), who(m), body_text(&m["body"]))
}

/// How a frame reads in the terminal; `None` for frames not worth a line.
pub fn describe(value: &Value) -> Option<String> {
    let list = |items: &Value, f: &dyn Fn(&Value) -> String| {
        items.as_array().map(|a| a.iter().map(f).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    Some(match value["type"].as_str()? {
        "message" => message_line(value),
        "direct" => format!("{} (direct) {}: {}", clock(None), who(value), body_text(&value["body"])),
        "presence" => {
            let verb = if value["event"] == "join" { "joined" } else { "left" };
            format!("{} [{}] * {} {verb}", clock(None), value["room"].as_str().unwrap_or("?"), who(value))
        }
        "joined" => {
            let mut lines =
                vec![format!("-- joined {} ({} here)", value["room"].as_str().unwrap_or("?"), value["members"])];
            lines.extend(value["history"].as_array().into_iter().flatten().map(message_line));
            lines.join("\n")
        }
        "left" => format!("-- left {}", value["room"].as_str().unwrap_or("?")),
        "welcome" => {
            format!("-- you are {} on {}", value["id"].as_str().unwrap_or("?"), value["server"].as_str().unwrap_or("?"))
        }
        "rooms" => format!(
            "-- rooms: {}",
            list(&value["rooms"], &|r| format!("{} ({})", r["room"].as_str().unwrap_or("?"), r["members"]))
        ),
        "members" => {
            format!("-- in {}: {}", value["room"].as_str().unwrap_or("?"), list(&value["members"], &|m| who(m)))
        }
        "error" => {
            format!("!! {}: {}", value["code"].as_str().unwrap_or("error"), value["message"].as_str().unwrap_or(""))
        }
        "ok" | "pong" => return None,
        other => format!("-- {other}: {value}"),
    })
}

/// Reads lines on its own thread (the editor blocks); hands back a printer
/// that writes above the prompt.
fn start_editor(
    current: Arc<Mutex<Option<String>>>,
    lines: mpsc::Sender<Option<String>>,
) -> oneshot::Receiver<Option<Box<dyn ExternalPrinter + Send>>> {
    let (printer_tx, printer_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(editor) => editor,
            Err(e) => {
                eprintln!("roomcast client: no line editor: {e}");
                let _ = printer_tx.send(None);
                let _ = lines.blocking_send(None);
                return;
            }
        };
        let printer = editor.create_external_printer().ok().map(|p| Box::new(p) as Box<dyn ExternalPrinter + Send>);
        let _ = printer_tx.send(printer);
        loop {
            let prompt = match &*current.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(room) => format!("{room}> "),
                None => "> ".to_string(),
            };
            match editor.readline(&prompt) {
                Ok(line) => {
                    let quit = line.trim() == "/quit";
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if lines.blocking_send(Some(line)).is_err() || quit {
                        // No second readline: the terminal must not be left
                        // in raw mode when the process exits.
                        return;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => {
                    let _ = lines.blocking_send(None);
                    return;
                }
            }
        }
    });
    printer_rx
}

pub async fn run(commands: mpsc::Sender<Command>, mut events: mpsc::Receiver<Event>) -> ExitCode {
    let current = Arc::new(Mutex::new(None));
    let (line_tx, mut line_rx) = mpsc::channel(16);
    let mut printer = start_editor(current.clone(), line_tx).await.ok().flatten();
    let mut show = |text: String| match printer.as_mut() {
        Some(printer) => {
            let _ = printer.print(format!("{text}\n"));
        }
        None => println!("{text}"),
    };
    let mut input_open = true;
    loop {
        tokio::select! {
            line = line_rx.recv(), if input_open => match line {
                Some(Some(line)) if line.trim().is_empty() => {}
                Some(Some(line)) => match parse_line(line.trim_end()) {
                    Ok(Command::Quit { .. }) => {
                        input_open = false;
                        let _ = commands.send(Command::Quit { wait: false }).await;
                    }
                    Ok(command) => {
                        let _ = commands.send(command).await;
                    }
                    Err(problem) => show(format!("!! {problem}")),
                },
                Some(None) | None => {
                    input_open = false;
                    let _ = commands.send(Command::Quit { wait: false }).await;
                }
            },
            event = events.recv() => match event {
                Some(Event::Frame(value)) => {
                    if let Some(text) = describe(&value) {
                        show(text);
                    }
                }
                Some(Event::Notice(text)) => show(format!("!! {text}")),
                Some(Event::Connected(url)) => show(format!("-- connected to {url}")),
                Some(Event::Disconnected { why, retry_in }) => {
                    show(format!("-- disconnected ({why}); reconnecting in {:.1}s", retry_in.as_secs_f64()));
                }
                Some(Event::Current(room)) => *current.lock().unwrap_or_else(|p| p.into_inner()) = room,
                None => return ExitCode::SUCCESS,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_read_well() {
        let m = json!({"type":"message","room":"r","seq":1,"from":"3","nick":"ann","ts":0,"body":"hi"});
        assert!(describe(&m).unwrap().ends_with("[r] ann: hi"));
        let m = json!({"type":"message","room":"r","seq":1,"from":"3","nick":null,"ts":0,"body":{"a":1}});
        assert!(describe(&m).unwrap().ends_with("[r] 3: {\"a\":1}"));
        let p = json!({"type":"presence","room":"r","event":"leave","id":"4","nick":null});
        assert!(describe(&p).unwrap().ends_with("[r] * 4 left"));
        let r = json!({"type":"rooms","rooms":[{"room":"a","members":2}]});
        assert_eq!(describe(&r).unwrap(), "-- rooms: a (2)");
        assert_eq!(describe(&json!({"type":"ok"})), None);
        let e = json!({"type":"error","code":"not_member","message":"join first"});
        assert_eq!(describe(&e).unwrap(), "!! not_member: join first");
    }
}
