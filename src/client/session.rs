//! The connection behind `roomcast client`, whichever the front end.
//!
//! It owns the WebSocket and what must survive it: the rooms joined, the
//! current room, where it is in each (the room's epoch and the last `seq`
//! seen), the nick. When the connection drops it reconnects with exponential
//! backoff and jitter, sets the nick again and rejoins every room with
//! `since` and `epoch`, so the missed messages come back in the `joined`
//! reply; messages it has already shown are skipped by `seq`, and a
//! `recovered: false` becomes a notice. A room whose epoch changed was
//! started again (the server restarted, or forgot it): its `seq` counts from
//! 1 again, so the client starts afresh there rather than skipping the new
//! messages as old ones.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::dial::{Dialer, Ws};
use crate::protocol::json_str;
use crate::protocol::request::build;

/// What the front end asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Publish a text body to the current room.
    Publish(String),
    /// Join a room (or switch to it) and make it current.
    Join(String),
    /// Leave a room (the current one by default).
    Leave(Option<String>),
    Nick(String),
    Rooms,
    Members(Option<String>),
    /// End the session; with `wait`, first wait (a few seconds at most)
    /// until every request was answered.
    Quit {
        wait: bool,
    },
}

/// What the front end is told.
#[derive(Debug, Clone)]
pub enum Event {
    Connected(String),
    Disconnected {
        why: String,
        retry_in: Duration,
    },
    /// A frame from the server, to show. Duplicates are not passed on.
    Frame(Value),
    /// Something for people (not from the server).
    Notice(String),
    /// The current room changed.
    Current(Option<String>),
}

/// Parses a line typed or piped: `/join R`, `/leave [R]`, `/nick N`,
/// `/rooms`, `/members [R]`, `/quit`; `//text` publishes `/text`;
/// anything else is published as it is.
pub fn parse_line(line: &str) -> Result<Command, String> {
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Command::Publish(line.to_string()));
    };
    if rest.starts_with('/') {
        return Ok(Command::Publish(rest.to_string()));
    }
    let mut words = rest.split_whitespace();
    let verb = words.next().unwrap_or("");
    let argument = words.next().map(str::to_string);
    match (verb, argument) {
        ("join", Some(room)) => Ok(Command::Join(room)),
        ("leave", room) => Ok(Command::Leave(room)),
        // A nick may hold spaces: it is the rest of the line.
        ("nick", Some(_)) => Ok(Command::Nick(rest["nick".len()..].trim().to_string())),
        ("rooms", None) => Ok(Command::Rooms),
        ("members", room) => Ok(Command::Members(room)),
        ("quit", None) => Ok(Command::Quit { wait: true }),
        _ => Err(format!("unknown command /{rest}; try /join R, /leave, /nick N, /rooms, /members, /quit")),
    }
}

pub struct Setup {
    pub room: Option<String>,
    pub nick: Option<String>,
    /// Messages of history to ask for on a first join.
    pub history: u64,
}

/// Where the client is in a room.
#[derive(Default)]
struct Position {
    /// The room's epoch, from its last `joined`.
    epoch: Option<String>,
    /// The last `seq` shown.
    seq: u64,
}

#[derive(Default)]
struct State {
    rooms: Vec<String>,
    current: Option<String>,
    positions: HashMap<String, Position>,
    nick: Option<String>,
    next_ref: u64,
    /// Requests sent and not answered yet (every request carries a ref).
    unanswered: usize,
    /// Requests that were not sent (no connection) or never answered
    /// (the connection ended first, or the answer did not come at the end):
    /// whether they took effect is unknown.
    undelivered: u64,
}

impl State {
    /// The `join` that picks `room` up where the client left it, or asks
    /// for `history` messages the first time.
    fn join(&mut self, room: &str, history: u64) -> String {
        let reference = self.reference();
        match self.positions.get(room) {
            Some(position) => build::join(room, None, Some((position.seq, position.epoch.as_deref())), reference),
            None => build::join(room, Some(history), None, reference),
        }
    }

    fn reference(&mut self) -> Option<u64> {
        let reference = self.next_ref;
        self.next_ref += 1;
        self.unanswered += 1;
        Some(reference)
    }
}

enum Ended {
    Quit,
    Lost(String),
    /// Closed 1008: authentication refused us; connecting again would be
    /// refused again.
    Refused(String),
}

/// How a session ended: how many requests may not have taken effect, and
/// why authentication refused it, if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub undelivered: u64,
    pub refused: Option<String>,
}

pub async fn run(
    dialer: Dialer,
    setup: Setup,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) -> Outcome {
    let mut state = State { nick: setup.nick, next_ref: 1, ..State::default() };
    if let Some(room) = setup.room {
        state.rooms.push(room.clone());
        state.current = Some(room);
    }
    let _ = events.send(Event::Current(state.current.clone())).await;
    let mut backoff = Duration::from_millis(500);
    loop {
        let why = match dialer.connect_with(&[("Sec-WebSocket-Protocol", crate::protocol::SUBPROTOCOL)], None).await {
            Ok(mut ws) => {
                backoff = Duration::from_millis(500);
                let _ = events.send(Event::Connected(dialer.url().to_string())).await;
                match serve(&mut ws, &mut state, setup.history, &mut commands, &events).await {
                    Ended::Quit => {
                        let _ = ws.close(None).await;
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), async { while ws.next().await.is_some() {} })
                                .await;
                        return Outcome { undelivered: state.undelivered, refused: None };
                    }
                    Ended::Refused(why) => {
                        state.undelivered += std::mem::take(&mut state.unanswered) as u64;
                        return Outcome { undelivered: state.undelivered, refused: Some(why) };
                    }
                    Ended::Lost(why) => {
                        // What was on its way when the connection went may or
                        // may not have arrived.
                        state.undelivered += std::mem::take(&mut state.unanswered) as u64;
                        why
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        // Reconnect after a growing wait, with jitter so that many clients
        // cut off together do not all come back at the same instant.
        let retry_in = backoff.mul_f64(0.75 + fastrand::f64() * 0.5);
        backoff = (backoff * 2).min(Duration::from_secs(10));
        let _ = events.send(Event::Disconnected { why, retry_in }).await;
        let wake = tokio::time::Instant::now() + retry_in;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                command = commands.recv() => match command {
                    None | Some(Command::Quit { .. }) => return Outcome { undelivered: state.undelivered, refused: None },
                    Some(command) => offline(&mut state, command, &events).await,
                }
            }
        }
    }
}

/// A command while disconnected: room changes are kept for the reconnect;
/// nothing is sent, and nothing is silently dropped.
async fn offline(state: &mut State, command: Command, events: &mpsc::Sender<Event>) {
    let notice = match command {
        Command::Join(room) => {
            if !state.rooms.contains(&room) {
                state.rooms.push(room.clone());
            }
            state.current = Some(room.clone());
            let _ = events.send(Event::Current(state.current.clone())).await;
            format!("not connected: will join {room} on reconnect")
        }
        Command::Nick(name) => {
            state.nick = Some(name);
            "not connected: the nick is set on reconnect".into()
        }
        _ => {
            state.undelivered += 1;
            "not connected: not sent".into()
        }
    };
    let _ = events.send(Event::Notice(notice)).await;
}

async fn send(ws: &mut Ws, text: String) -> Result<(), Ended> {
    ws.send(Message::text(text)).await.map_err(|e| Ended::Lost(e.to_string()))
}

async fn serve(
    ws: &mut Ws,
    state: &mut State,
    history: u64,
    commands: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<Event>,
) -> Ended {
    // Restore the session: nick, then every room, from where we were. A
    // new connection answers nothing sent on the old one.
    state.unanswered = 0;
    let mut restore = Vec::new();
    if let Some(nick) = state.nick.clone() {
        let reference = state.reference();
        restore.push(build::nick(&nick, reference));
    }
    for room in state.rooms.clone() {
        restore.push(state.join(&room, history));
    }
    for request in restore {
        if let Err(ended) = send(ws, request).await {
            return ended;
        }
    }
    let mut quitting = false;
    loop {
        if quitting && state.unanswered == 0 {
            return Ended::Quit;
        }
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&text) {
                        received(state, value, events).await;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.as_ref().map_or("closed".to_string(), |f| format!("closed {} {}", u16::from(f.code), f.reason));
                    if frame.is_some_and(|f| u16::from(f.code) == crate::protocol::close::POLICY) {
                        return Ended::Refused(why);
                    }
                    return Ended::Lost(why);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Lost(e.to_string()),
                None => return Ended::Lost("connection ended".into()),
            },
            command = commands.recv(), if !quitting => {
                let Some(command) = command else { return Ended::Quit };
                if let Command::Quit { wait } = command {
                    if !wait {
                        return Ended::Quit;
                    }
                    quitting = true;
                    continue;
                }
                if let Err(ended) = act(ws, state, history, command, events).await {
                    return ended;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(5)), if quitting => {
                let _ = events.send(Event::Notice(format!("{} requests were not answered", state.unanswered))).await;
                state.undelivered += std::mem::take(&mut state.unanswered) as u64;
                return Ended::Quit;
            }
        }
    }
}

async fn act(
    ws: &mut Ws,
    state: &mut State,
    history: u64,
    command: Command,
    events: &mpsc::Sender<Event>,
) -> Result<(), Ended> {
    match command {
        Command::Publish(text) => {
            let Some(room) = state.current.clone() else {
                state.undelivered += 1;
                let _ = events.send(Event::Notice("join a room first: /join ROOM".into())).await;
                return Ok(());
            };
            let reference = state.reference();
            send(ws, build::publish(&room, &json_str(&text), reference)).await
        }
        Command::Join(room) => {
            if !state.rooms.contains(&room) {
                state.rooms.push(room.clone());
            }
            state.current = Some(room.clone());
            let _ = events.send(Event::Current(state.current.clone())).await;
            let join = state.join(&room, history);
            send(ws, join).await
        }
        Command::Leave(room) => {
            let Some(room) = room.or_else(|| state.current.clone()) else {
                let _ = events.send(Event::Notice("not in a room".into())).await;
                return Ok(());
            };
            state.rooms.retain(|r| *r != room);
            state.positions.remove(&room);
            if state.current.as_ref() == Some(&room) {
                state.current = state.rooms.last().cloned();
                let _ = events.send(Event::Current(state.current.clone())).await;
            }
            let reference = state.reference();
            send(ws, build::leave(&room, reference)).await
        }
        Command::Nick(name) => {
            state.nick = Some(name.clone());
            let reference = state.reference();
            send(ws, build::nick(&name, reference)).await
        }
        Command::Rooms => {
            let reference = state.reference();
            send(ws, build::rooms(reference)).await
        }
        Command::Members(room) => match room.or_else(|| state.current.clone()) {
            Some(room) => {
                let reference = state.reference();
                send(ws, build::members(&room, reference)).await
            }
            None => {
                let _ = events.send(Event::Notice("not in a room".into())).await;
                Ok(())
            }
        },
        Command::Quit { .. } => Ok(()),
    }
}

/// Keeps `seq` bookkeeping and passes frames on, skipping duplicates.
async fn received(state: &mut State, mut value: Value, events: &mpsc::Sender<Event>) {
    match value["type"].as_str() {
        Some("message") => {
            let (Some(room), Some(seq)) = (value["room"].as_str(), value["seq"].as_u64()) else { return };
            let position = state.positions.entry(room.to_string()).or_default();
            if seq <= position.seq {
                return;
            }
            if position.seq > 0 && seq > position.seq + 1 {
                let notice = format!("{} messages in {room} were missed", seq - position.seq - 1);
                let _ = events.send(Event::Notice(notice)).await;
            }
            position.seq = seq;
        }
        Some("joined") => {
            let room = value["room"].as_str().unwrap_or_default().to_string();
            let epoch = value["epoch"].as_str().map(str::to_string);
            let position = state.positions.entry(room.clone()).or_default();
            // A new epoch: the room started again at seq 1, and what the
            // client saw before belongs to the old one.
            let restarted = position.epoch.is_some() && epoch.is_some() && position.epoch != epoch;
            if restarted {
                position.seq = 0;
                let notice = format!("{room} was started again on the server; its messages begin anew");
                let _ = events.send(Event::Notice(notice)).await;
            }
            position.epoch = epoch;
            if let Some(history) = value["history"].as_array_mut() {
                // Only what was not shown before; the rest is the gap being filled.
                let last = position.seq;
                history.retain(|m| m["seq"].as_u64().is_some_and(|seq| seq > last));
                if let Some(newest) = history.iter().filter_map(|m| m["seq"].as_u64()).max() {
                    position.seq = newest;
                }
            }
            if value["recovered"] == Value::Bool(false) && !restarted {
                let notice = format!("could not recover some messages in {room}");
                let _ = events.send(Event::Notice(notice)).await;
            }
        }
        _ => {}
    }
    if value.get("ref").is_some() {
        state.unanswered = state.unanswered.saturating_sub(1);
    }
    let _ = events.send(Event::Frame(value)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_commands() {
        assert_eq!(parse_line("hello there"), Ok(Command::Publish("hello there".into())));
        assert_eq!(parse_line("//etc/passwd"), Ok(Command::Publish("/etc/passwd".into())));
        assert_eq!(parse_line("/join lobby"), Ok(Command::Join("lobby".into())));
        assert_eq!(parse_line("/leave"), Ok(Command::Leave(None)));
        assert_eq!(parse_line("/nick Ann Smith"), Ok(Command::Nick("Ann Smith".into())));
        assert_eq!(parse_line("/members r"), Ok(Command::Members(Some("r".into()))));
        assert_eq!(parse_line("/rooms"), Ok(Command::Rooms));
        assert_eq!(parse_line("/quit"), Ok(Command::Quit { wait: true }));
        assert!(parse_line("/join").is_err());
        assert!(parse_line("/dance").is_err());
    }
}
