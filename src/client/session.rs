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
//! messages as old ones. Lines typed while it is disconnected wait
//! ([`lines`](super::lines)) and are published once the rooms are joined
//! again; a line that cannot be sent is named.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::lines::{Line, Lines};
use crate::dial::{DialError, Dialer, Ws};
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
    /// Lines to publish until the server has them.
    lines: Lines,
    /// Input ended while lines waited for a connection: quit once they are
    /// answered, or at this time.
    quit_by: Option<tokio::time::Instant>,
}

/// How long input that ended waits for a connection to send its lines.
const QUIT_WAIT: Duration = Duration::from_secs(5);

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
    /// Why connecting again would not help (a certificate not trusted).
    pub stopped: Option<String>,
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
                        return state.outcome(None, &events).await;
                    }
                    Ended::Refused(why) => {
                        state.undelivered += std::mem::take(&mut state.unanswered) as u64;
                        return state.outcome(Some(why), &events).await;
                    }
                    Ended::Lost(why) => {
                        // Lines on their way go again (same ids); whether the
                        // other requests on their way arrived is unknown.
                        let resent = state.lines.resend_sent();
                        state.undelivered += (std::mem::take(&mut state.unanswered) - resent) as u64;
                        why
                    }
                }
            }
            Err(e @ DialError::Untrusted(_)) => {
                let mut outcome = state.outcome(None, &events).await;
                outcome.stopped = Some(e.to_string());
                return outcome;
            }
            Err(e) => e.to_string(),
        };
        // Reconnect after a growing wait, with jitter so that many clients
        // cut off together do not all come back at the same instant.
        let retry_in = backoff.mul_f64(0.75 + fastrand::f64() * 0.5);
        backoff = (backoff * 2).min(Duration::from_secs(10));
        let _ = events.send(Event::Disconnected { why, retry_in }).await;
        let wake = tokio::time::Instant::now() + retry_in;
        if state.quit_by.is_some_and(|by| wake > by) {
            return state.outcome(None, &events).await;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                command = commands.recv(), if state.quit_by.is_none() => match command {
                    Some(Command::Quit { wait: true }) if state.lines.any_waiting() => {
                        state.quit_by = Some(tokio::time::Instant::now() + QUIT_WAIT);
                        let notice = "input ended: sending what waits once connected again (5 s at most)";
                        let _ = events.send(Event::Notice(notice.into())).await;
                    }
                    None | Some(Command::Quit { .. }) => return state.outcome(None, &events).await,
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
        Command::Publish(text) => match state.current.clone() {
            None => {
                state.undelivered += 1;
                format!("not sent (join a room first: /join ROOM): {text:?}")
            }
            Some(room) => {
                let line = state.lines.line(room, text);
                match state.lines.wait(line) {
                    Ok(()) => "not connected: the line is sent once the rooms are joined again".into(),
                    Err(line) => {
                        state.undelivered += 1;
                        format!(
                            "not connected, and {} lines wait already: not sent: {:?}",
                            super::lines::MAX_WAITING,
                            line.text
                        )
                    }
                }
            }
        },
        _ => {
            state.undelivered += 1;
            "not connected: not sent".into()
        }
    };
    let _ = events.send(Event::Notice(notice)).await;
}

impl State {
    /// How the session ended; lines the server never got are named.
    async fn outcome(&mut self, refused: Option<String>, events: &mpsc::Sender<Event>) -> Outcome {
        let unsent: Vec<String> = self.lines.unsent().map(|line| line.text.clone()).collect();
        for text in &unsent {
            let _ = events.send(Event::Notice(format!("not sent: {text:?}"))).await;
        }
        Outcome { undelivered: self.undelivered + unsent.len() as u64, refused, stopped: None }
    }

    /// Sends `line` (as a publish with its id) and keeps it until answered.
    async fn publish(&mut self, ws: &mut Ws, line: Line) -> Result<(), Ended> {
        let reference = self.reference().unwrap_or_default();
        let request = build::publish_once(&line.room, &json_str(&line.text), &line.id, Some(reference));
        self.lines.sent(reference, line);
        send(ws, request).await
    }

    /// Sends every waiting line, in order.
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        for line in self.lines.take_waiting() {
            self.publish(ws, line).await?;
        }
        Ok(())
    }
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
    // After the joins: the server takes a session's requests in order.
    if let Err(ended) = state.flush(ws).await {
        return ended;
    }
    let mut quitting = state.quit_by.is_some();
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
            // Lines the server could not take a moment ago (unavailable).
            _ = tokio::time::sleep(Duration::from_secs(1)), if state.lines.any_waiting() => {
                if let Err(ended) = state.flush(ws).await {
                    return ended;
                }
            }
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
                let notice = format!("not sent (join a room first: /join ROOM): {text:?}");
                let _ = events.send(Event::Notice(notice)).await;
                return Ok(());
            };
            let line = state.lines.line(room, text);
            state.publish(ws, line).await
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
    if let Some(reference) = value.get("ref") {
        state.unanswered = state.unanswered.saturating_sub(1);
        let line = reference.as_u64().and_then(|reference| state.lines.answered(reference));
        if let Some(line) = line.filter(|_| value["code"] == "unavailable") {
            // Not published, and never will be: sent again in a moment.
            state.lines.retry(line);
        }
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
