//! A node's one pub/sub connection to Redis, for the channels of the rooms
//! it has members in and its own `direct` channel. It survives the connection: when it drops (Redis
//! restarted, failed over, or killed the client), it connects again with
//! backoff, subscribes every room again, waits for Redis to confirm, and
//! only then says `Resubscribed`, so that the owner repairs each room from
//! its history knowing nothing published from then on is missed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::keys::RoomKeys;
use super::presence::PRESENCE_PREFIX;
use super::publish::{Delivered, render};
use crate::broker::Event;
use crate::protocol::{RoomName, SessionId};

/// A raw binary frame on a room's channel: `B FROM ` then the bytes.
pub const BINARY_PREFIX: &[u8] = b"B ";

/// What a payload on `room`'s channel says: a message (rendered into its
/// frame), a presence event, or a raw member's binary frame.
pub fn event_of(room: RoomName, payload: Vec<u8>) -> Option<Event> {
    if let Some(binary) = payload.strip_prefix(BINARY_PREFIX) {
        let space = binary.iter().position(|b| *b == b' ')?;
        let from = std::str::from_utf8(&binary[..space]).ok().and_then(SessionId::from_wire);
        let bytes = Bytes::copy_from_slice(&binary[space + 1..]);
        return Some(Event::Binary { room, from, bytes });
    }
    let payload = String::from_utf8(payload).ok()?;
    if let Some(presence) = payload.strip_prefix(PRESENCE_PREFIX) {
        return Some(Event::Presence { room, frame: presence.to_string() });
    }
    let Some(delivered) = Delivered::parse(&payload) else {
        log::warn!("cluster: a malformed payload on {room}'s channel");
        return None;
    };
    let frame = render(&room, delivered.seq, delivered.stored).into();
    Some(Event::Message { seq: delivered.seq, epoch: Arc::from(delivered.epoch), frame, room })
}

enum Command {
    Subscribe(RoomName, oneshot::Sender<redis::RedisResult<()>>),
    Unsubscribe(RoomName),
}

/// The handle; the connection's task ends when every clone is dropped.
#[derive(Clone)]
pub struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
}

impl Subscriber {
    /// Starts the task of node `node` on the current Tokio runtime.
    pub fn start(client: redis::Client, prefix: String, node: u64, events: mpsc::Sender<Event>) -> Subscriber {
        Self::start_on(&tokio::runtime::Handle::current(), client, prefix, node, events)
    }

    /// Starts the task on the runtime `runtime`.
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        client: redis::Client,
        prefix: String,
        node: u64,
        events: mpsc::Sender<Event>,
    ) -> Subscriber {
        let (commands, receiver) = mpsc::unbounded_channel();
        runtime.spawn(run(client, prefix, node, receiver, events));
        Subscriber { commands }
    }

    /// Subscribes to `room`'s channel; resolves once Redis has confirmed,
    /// so that anything published later arrives.
    pub async fn subscribe(&self, room: &RoomName) -> redis::RedisResult<()> {
        let (done, confirmed) = oneshot::channel();
        let gone = || redis::RedisError::from((redis::ErrorKind::Io, "the subscriber has stopped"));
        self.commands.send(Command::Subscribe(room.clone(), done)).map_err(|_| gone())?;
        confirmed.await.map_err(|_| gone())?
    }

    pub fn unsubscribe(&self, room: &RoomName) {
        let _ = self.commands.send(Command::Unsubscribe(room.clone()));
    }
}

/// The room a channel name belongs to (`PREFIX:{ROOM}:messages`).
fn room_of(channel: &str) -> Option<RoomName> {
    let start = channel.find('{')? + 1;
    let end = start + channel[start..].find('}')?;
    RoomName::parse(&channel[start..end]).ok()
}

async fn run(
    client: redis::Client,
    prefix: String,
    node: u64,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let channel = |room: &RoomName| RoomKeys::new(&prefix, room).channel;
    let direct = super::nodes::direct_channel(&prefix, node);
    let mut rooms: HashSet<RoomName> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        // After falling behind: let the owner catch up before reading again.
        while events.capacity() < events.max_capacity() / 2 {
            if events.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                log::debug!("cluster: pub/sub connection failed: {error}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut channels: Vec<String> = rooms.iter().map(channel).collect();
        channels.push(direct.clone());
        if let Err(error) = sink.subscribe(&channels).await {
            log::debug!("cluster: subscribing again failed: {error}");
            continue;
        }
        backoff = Duration::from_millis(50);
        if connected_before && events.send(Event::Resubscribed).await.is_err() {
            return;
        }
        connected_before = true;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        log::warn!("cluster: the pub/sub connection closed; resubscribing");
                        break;
                    };
                    let payload = message.get_payload_bytes().to_vec();
                    let event = match room_of(message.get_channel_name()) {
                        _ if message.get_channel_name() == direct => match String::from_utf8(payload) {
                            Ok(text) => Event::Direct(text),
                            Err(_) => continue,
                        },
                        Some(room) => match event_of(room, payload) {
                            Some(event) => event,
                            None => continue,
                        },
                        None => continue,
                    };
                    // Bounded: a node that falls EVENT_QUEUE events behind
                    // drops the connection (and what redis-rs buffered for
                    // it) rather than buffer without end, and repairs each
                    // room from its history once subscribed again.
                    match events.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            log::warn!("cluster: this node fell behind its rooms' channels; resubscribing and repairing");
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(room, done)) => {
                        let result = sink.subscribe(channel(&room)).await;
                        if result.is_ok() {
                            rooms.insert(room);
                        }
                        let _ = done.send(result);
                    }
                    Some(Command::Unsubscribe(room)) => {
                        rooms.remove(&room);
                        let _ = sink.unsubscribe(channel(&room)).await;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_room() {
        let room = RoomName::parse("team:red").unwrap();
        assert_eq!(room_of(&RoomKeys::new("rc", &room).channel), Some(room));
        assert_eq!(room_of("rc:nothing"), None);
    }
}
