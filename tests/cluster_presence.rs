//! Presence across nodes in Redis (`shared/spec/cluster.md`), against a real
//! `redis-server`: members joined on any node are counted and listed
//! together, `room_full` counts them all, joins and leaves are announced on
//! the room's channel as the same `presence` frames one process sends, and
//! a room whose last member left keeps its history for `empty_ttl`.

mod common;

use std::time::Duration;

use common::Redis;
use roomcast::broker::redis::keys::RoomKeys;
use roomcast::broker::redis::presence::{Joined, Membership, PRESENCE_PREFIX, Presence, Read};
use roomcast::broker::redis::publish::{Publish, RoomBounds, publish};
use roomcast::protocol::frame::{self, PresenceEvent};
use roomcast::protocol::{RoomName, SessionId};

#[allow(clippy::too_many_arguments)]
async fn join(
    presence: &Presence,
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &RoomKeys,
    room: &str,
    node: &str,
    id: u64,
    entry: &str,
    max: usize,
) -> Joined {
    let id = id.to_string();
    let member = Membership { room, node, id: &id, entry };
    presence.join(conn, keys, &member, (max, 1000), Read::Recent(0)).await.unwrap().joined
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn members_of_every_node_are_counted_listed_and_announced_together() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let name = RoomName::parse("lobby").unwrap();
    let room = RoomKeys::new("test", &name);
    let presence = Presence::new("test");
    let mut pubsub = redis.subscribed(&[&room.channel]).await;
    let entry = |id: u64, nick: Option<&str>| frame::member_entry(SessionId(id), nick, Some(Some("u")));

    // Two on node n1, one on node n2; the room holds three members.
    let joins = [("n1", 1, Some("ann")), ("n1", 2, None), ("n2", 3, Some("cy"))];
    for (n, (node, id, nick)) in joins.iter().enumerate() {
        let joined = join(&presence, &mut conn, &room, "lobby", node, *id, &entry(*id, *nick), 3).await;
        assert_eq!(joined, Joined::Added(n + 1));
    }
    let again = join(&presence, &mut conn, &room, "lobby", "n1", 1, &entry(1, Some("ann")), 3).await;
    assert_eq!(again, Joined::Already(3), "joining again changes nothing");
    let full = join(&presence, &mut conn, &room, "lobby", "n2", 4, &entry(4, None), 3).await;
    assert_eq!(full, Joined::Full(3), "max_members_per_room counts every node");
    let mut listed = presence.members(&mut conn, &room).await.unwrap();
    listed.sort();
    assert_eq!(listed, [entry(1, Some("ann")), entry(2, None), entry(3, Some("cy"))]);
    assert_eq!(presence.rooms(&mut conn).await.unwrap(), [("lobby".to_string(), 3)]);
    let mut held = presence.memberships(&mut conn, "n1").await.unwrap();
    held.sort();
    assert_eq!(held, [("lobby".to_string(), "1".to_string()), ("lobby".to_string(), "2".to_string())]);

    // The history of an occupied room does not expire; once the room is
    // empty it lives for empty_ttl.
    let bounds =
        RoomBounds { history: 10, history_bytes: 1 << 20, publish_ids: 10, empty_ttl: Duration::ZERO, max_rooms: 10 };
    let message = Publish {
        id: None,
        attempt: "p1",
        head: "{\"seq\":",
        tail: "}",
        text: None,
        bounds,
        occupied: true,
        min_seq: 1,
    };
    publish(&mut conn, &room, &message).await.unwrap();
    assert_eq!(presence.leave(&mut conn, &room, "lobby", "n1", "2", Duration::from_secs(60)).await.unwrap(), Some(2));
    assert_eq!(presence.leave(&mut conn, &room, "lobby", "n1", "2", Duration::from_secs(60)).await.unwrap(), None);
    let ttl: i64 = redis::cmd("PTTL").arg(&room.history).query_async(&mut conn).await.unwrap();
    assert_eq!(ttl, -1, "occupied: no expiry");
    for (node, id) in [("n1", "1"), ("n2", "3")] {
        presence.leave(&mut conn, &room, "lobby", node, id, Duration::from_secs(60)).await.unwrap();
    }
    assert!(presence.rooms(&mut conn).await.unwrap().is_empty(), "no members, not listed");
    for key in room.lasting() {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
        assert!(ttl > 50_000 && ttl <= 60_000, "empty: {key} kept for empty_ttl, {ttl} ms left");
    }
    let held: Vec<(String, f64)> =
        redis::cmd("ZRANGE").arg(&room.held).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut conn).await.unwrap();
    assert_eq!(held.len(), 1, "an empty room still counts against max_rooms: {held:?}");
    // Joining again before it expires keeps it.
    join(&presence, &mut conn, &room, "lobby", "n2", 5, &entry(5, None), 3).await;
    let ttl: i64 = redis::cmd("PTTL").arg(&room.history).query_async(&mut conn).await.unwrap();
    assert_eq!(ttl, -1);

    // Every join and leave went out on the channel as the presence frame a
    // single process would send, in order.
    let expected = [
        (PresenceEvent::Join, 1, Some("ann")),
        (PresenceEvent::Join, 2, None),
        (PresenceEvent::Join, 3, Some("cy")),
        (PresenceEvent::Leave, 2, None),
        (PresenceEvent::Leave, 1, Some("ann")),
        (PresenceEvent::Leave, 3, Some("cy")),
        (PresenceEvent::Join, 5, None),
    ];
    let mut stream = pubsub.on_message();
    for (event, id, nick) in expected {
        let mut payload = common::next_payload(&mut stream).await;
        if !payload.starts_with(PRESENCE_PREFIX) {
            payload = common::next_payload(&mut stream).await; // the message published above
        }
        let local = frame::presence(&name, event, SessionId(id), nick, Some(Some("u")));
        assert_eq!(payload, format!("{PRESENCE_PREFIX}{local}"));
    }
}

/// A node found dead: every member it had leaves every room, with the
/// leave events other nodes' members see, and the counts follow; the other
/// nodes' members stay.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_dead_node_s_members_leave_with_leave_events() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let presence = Presence::new("test");
    let rooms = ["a", "b:c"].map(|name| RoomName::parse(name).unwrap());
    let keys = rooms.each_ref().map(|name| RoomKeys::new("test", name));
    let channels = keys.each_ref().map(|room| room.channel.as_str());
    let mut pubsub = redis.subscribed(&channels).await;
    let entry = |id: u64| frame::member_entry(SessionId(id), None, None);
    // Node "dead" has session 1 in both rooms and 2 in "a"; node "live" has 3 in "a".
    for (node, id, room) in [("dead", 1, 0), ("dead", 1, 1), ("dead", 2, 0), ("live", 3, 0)] {
        let name = rooms[room].as_str();
        join(&presence, &mut conn, &keys[room], name, node, id, &entry(id), 100).await;
    }
    assert_eq!(presence.evict(&mut conn, "dead", Duration::from_secs(60)).await.unwrap(), 3);
    assert_eq!(presence.rooms(&mut conn).await.unwrap(), [("a".to_string(), 1)], "b:c emptied, a keeps 3");
    assert_eq!(presence.members(&mut conn, &keys[0]).await.unwrap(), [entry(3)]);
    assert!(presence.memberships(&mut conn, "dead").await.unwrap().is_empty());
    assert_eq!(presence.evict(&mut conn, "dead", Duration::from_secs(60)).await.unwrap(), 0, "once");
    let mut stream = pubsub.on_message();
    let mut leaves = Vec::new();
    while leaves.len() < 3 {
        let payload = common::next_payload(&mut stream).await;
        let event: serde_json::Value = serde_json::from_str(payload.strip_prefix(PRESENCE_PREFIX).unwrap()).unwrap();
        if event["event"] == "leave" {
            leaves.push((event["room"].as_str().unwrap().to_string(), event["id"].as_str().unwrap().to_string()));
        }
    }
    leaves.sort();
    let expected = [("a", "1"), ("a", "2"), ("b:c", "1")].map(|(room, id)| (room.to_string(), id.to_string()));
    assert_eq!(leaves, expected);
}
