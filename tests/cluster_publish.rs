//! The Redis side of a clustered publish (`shared/spec/cluster.md`), against
//! a real `redis-server`: one script gives each message its `seq`, keeps it
//! in the room's history and publishes it, atomically; a publish with a
//! record that exists is never run twice; a node whose answer was lost
//! learns whether it ran, or closes it so that it never does. What a room
//! holds is bounded like one process's.

mod common;

use std::time::Duration;

use common::Redis;
use futures_util::StreamExt;
use roomcast::broker::redis::keys::RoomKeys;
use roomcast::broker::redis::publish::{
    Delivered, Outcome, Publish, Published, RoomBounds, Settled, publish, publish_settled, render, settle,
};
use roomcast::protocol::RoomName;

fn keys(room: &str) -> RoomKeys {
    RoomKeys::new("test", &RoomName::parse(room).unwrap())
}

fn bounds(history: usize) -> RoomBounds {
    RoomBounds {
        history,
        history_bytes: 1 << 30,
        publish_ids: 1000,
        empty_ttl: Duration::from_secs(60),
        max_rooms: 1000,
    }
}

fn message<'a>(attempt: &'a str, tail: &'a str, history: usize) -> Publish<'a> {
    Publish {
        id: None,
        attempt,
        head: "{\"seq\":",
        tail,
        text: None,
        bounds: bounds(history),
        occupied: false,
        min_seq: 1,
    }
}

/// Runs `message`, which must be published.
async fn published(conn: &mut impl redis::aio::ConnectionLike, room: &RoomKeys, message: &Publish<'_>) -> Published {
    match publish(conn, room, message).await.unwrap() {
        Outcome::Published(published) => published,
        other => panic!("not published: {other:?}"),
    }
}

/// Every entry of the room's history: (id, frame).
async fn history(connection: &mut redis::aio::MultiplexedConnection, keys: &RoomKeys) -> Vec<(String, String)> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&keys.history).arg("-").arg("+").query_async(connection).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let stored: String = entry.get("f").or_else(|| entry.get("r")).expect("a message field");
            (entry.id, stored)
        })
        .collect()
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn each_publish_gets_the_next_seq_in_history_and_on_the_channel_in_order() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("lobby");
    let mut pubsub = redis.subscribed(&[&room.channel]).await;
    let mut epochs = Vec::new();
    for n in 1..=5 {
        let tail = format!(",\"body\":{n}}}");
        let done = published(&mut conn, &room, &message(&format!("a:p{n}"), &tail, 50)).await;
        assert_eq!((done.seq, done.repeated), (n, false));
        epochs.push(done.epoch);
    }
    epochs.dedup();
    assert_eq!(epochs.len(), 1, "one epoch while the room lives");
    let mut stream = pubsub.on_message();
    for n in 1..=5u64 {
        let payload: String = stream.next().await.expect("a message").get_payload().unwrap();
        let delivered = Delivered::parse(&payload).expect("SEQ EPOCH FRAME");
        assert_eq!((delivered.seq, delivered.epoch), (n, epochs[0].as_str()));
        assert_eq!(delivered.stored, format!("{{\"seq\":{n},\"body\":{n}}}"), "head, seq, tail");
    }
    let kept = history(&mut conn, &room).await;
    let ids: Vec<&str> = kept.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0", "5-0"], "the entry id is the seq");
    assert_eq!(kept[2].1, "{\"seq\":3,\"body\":3}");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publish_whose_record_exists_is_published_once() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("retries");
    let first = published(&mut conn, &room, &message("a:node1-7", ",\"body\":1}", 50)).await;
    // The same publish again, as a retry after its answer was lost.
    let again = published(&mut conn, &room, &message("a:node1-7", ",\"body\":1}", 50)).await;
    assert_eq!(again, Published { repeated: true, ..first.clone() });
    // A client's id: another publish with it, another attempt, is the first.
    let client =
        published(&mut conn, &room, &Publish { id: Some("mine"), ..message("n1-1", ",\"body\":2}", 50) }).await;
    let retried =
        published(&mut conn, &room, &Publish { id: Some("mine"), ..message("n2-1", ",\"body\":2}", 50) }).await;
    assert_eq!((retried.seq, retried.repeated), (client.seq, true));
    assert_eq!(history(&mut conn, &room).await.len(), 2, "kept once each");
    let next = published(&mut conn, &room, &message("a:node1-8", ",\"body\":3}", 50)).await;
    assert_eq!(next.seq, client.seq + 1, "no seq was spent on the repeats");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn history_keeps_the_newest_messages_by_count_and_by_bytes() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("capped");
    for n in 1..=7 {
        published(&mut conn, &room, &message(&format!("a:c{n}"), "}", 3)).await;
    }
    let ids: Vec<String> = history(&mut conn, &room).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["5-0", "6-0", "7-0"]);
    let none = keys("no-history");
    published(&mut conn, &none, &message("a:n1", "}", 0)).await;
    assert!(history(&mut conn, &none).await.is_empty(), "rooms.history = 0 keeps nothing");

    // `history_bytes` counts frames, as one process does: frames of 100
    // bytes, 350 bytes kept: the newest three.
    let sized = keys("sized");
    let tail = format!(",\"body\":\"{}\"}}", "x".repeat(100 - 19));
    for n in 1..=6 {
        let record = format!("a:s{n}");
        let mut message = message(&record, &tail, 50);
        message.bounds.history_bytes = 350;
        published(&mut conn, &sized, &message).await;
    }
    let kept = history(&mut conn, &sized).await;
    assert!(kept.iter().all(|(_, frame)| frame.len() == 100), "{kept:?}");
    assert_eq!(kept.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["4-0", "5-0", "6-0"]);
    // One larger than the bound is not kept, and then nothing before it.
    let mut huge = message("a:s7", &tail, 50);
    huge.bounds.history_bytes = 99;
    published(&mut conn, &sized, &huge).await;
    assert!(history(&mut conn, &sized).await.is_empty(), "no gap: nothing older than a message not kept");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn raw_text_is_kept_as_it_came_and_rendered_into_the_frame() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("raw");
    let mut pubsub = redis.subscribed(&[&room.channel]).await;
    let text = "\u{1}".repeat(10_000);
    let fields = ",\"from\":\"7\",\"nick\":null,\"ts\":1,\"body\":";
    let head = "{\"type\":\"message\",\"room\":\"raw\",\"seq\":";
    let mut message = message("a:r1", fields, 50);
    message.head = head;
    message.text = Some(&text);
    published(&mut conn, &room, &message).await;
    let usage: u64 = redis::cmd("MEMORY").arg("USAGE").arg(&room.history).query_async(&mut conn).await.unwrap();
    assert!(usage < 12_000, "kept as it came ({usage} bytes), not as JSON (60,000)");
    let mut stream = pubsub.on_message();
    let payload = common::next_payload(&mut stream).await;
    assert!(payload.len() < 11_000, "sent as it came: {} bytes", payload.len());
    let delivered = Delivered::parse(&payload).unwrap();
    let frame: serde_json::Value = serde_json::from_str(&render(&room.room, delivered.seq, delivered.stored)).unwrap();
    assert_eq!((frame["seq"].as_u64(), frame["body"].as_str()), (Some(1), Some(text.as_str())));
    let stored = &history(&mut conn, &room).await[0].1;
    assert_eq!(render(&room.room, 1, stored), render(&room.room, delivered.seq, delivered.stored));
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_room_whose_data_was_lost_starts_again_with_a_new_epoch() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("lost");
    let before = published(&mut conn, &room, &message("a:l1", "}", 50)).await;
    published(&mut conn, &room, &message("a:l2", "}", 50)).await;
    // Redis lost the room's counter (a restart without persistence, an
    // eviction) but not its history.
    let _: () = redis::cmd("DEL").arg(&room.meta).query_async(&mut conn).await.unwrap();
    let after = published(&mut conn, &room, &message("a:l3", "}", 50)).await;
    assert_eq!(after.seq, 1);
    assert_ne!(after.epoch, before.epoch, "a new numbering is a new epoch");
    let ids: Vec<String> = history(&mut conn, &room).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["1-0"], "the old entries do not mix with the new numbering");
}

/// A room nobody is in (an API publish's) is held, counted against
/// max_rooms, and every key of it expires after empty_ttl.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn rooms_nobody_is_in_count_and_expire() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let limited = |record: &'static str| {
        let mut message = message(record, "}", 50);
        message.bounds.max_rooms = 2;
        message
    };
    published(&mut conn, &keys("one"), &limited("a:1")).await;
    published(&mut conn, &keys("two"), &limited("a:2")).await;
    assert_eq!(publish(&mut conn, &keys("three"), &limited("a:3")).await.unwrap(), Outcome::TooManyRooms);
    published(&mut conn, &keys("one"), &limited("a:4")).await;
    for key in keys("one").lasting() {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.unwrap();
        assert!(ttl > 50_000 && ttl <= 60_000, "{key}: {ttl}");
    }
    let ttl: i64 = redis::cmd("PTTL").arg(&keys("three").meta).query_async(&mut conn).await.unwrap();
    assert_eq!(ttl, -2, "a refused room leaves nothing");
}

/// A node's answer lost: it asks Redis what became of the publish. A
/// record says it ran; without one the attempt is closed, and then never
/// runs; when the records of publishes it could have been were forgotten,
/// nobody knows (but it is closed all the same).
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn settling_tells_published_closed_and_unknown_apart() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("settle");
    let ran = published(&mut conn, &room, &message("ran", "}", 50)).await;
    let expected = Settled::Known(Outcome::Published(Published { repeated: true, ..ran.clone() }));
    assert_eq!(settle(&mut conn, &room, &message("ran", "}", 50)).await.unwrap(), expected);
    // Asked about before it arrived: closed, and then it does not run.
    let stuck = message("stuck", "}", 50);
    assert_eq!(settle(&mut conn, &room, &stuck).await.unwrap(), Settled::Known(Outcome::Closed));
    assert_eq!(publish(&mut conn, &room, &stuck).await.unwrap(), Outcome::Closed, "closed: never run");
    assert_eq!(history(&mut conn, &room).await.len(), 1, "only the one that ran");
    // A client's id closes only the attempt: sent again, it is published.
    let with_id = Publish { id: Some("k"), ..message("late-1", "}", 50) };
    assert_eq!(settle(&mut conn, &room, &with_id).await.unwrap(), Settled::Known(Outcome::Closed));
    let again = published(&mut conn, &room, &Publish { attempt: "late-2", ..with_id }).await;
    assert_eq!((again.seq, again.repeated), (ran.seq + 1, false));
    // publish_ids = 2: "ran" (seq 1) is forgotten two publishes later; an
    // attempt that could have been it is unknown, one sent after is not.
    let mut few = message("x", "}", 50);
    few.bounds.publish_ids = 2;
    for attempt in ["y", "z", "zz"] {
        published(&mut conn, &room, &Publish { attempt, ..few }).await;
    }
    let lost = Publish { attempt: "lost", min_seq: 1, ..few };
    assert_eq!(settle(&mut conn, &room, &lost).await.unwrap(), Settled::Unknown);
    let recent = Publish { attempt: "recent", min_seq: 6, ..few };
    assert_eq!(settle(&mut conn, &room, &recent).await.unwrap(), Settled::Known(Outcome::Closed));
}

/// Ids are the room's last `publish_ids` publishes, as in one process: an
/// id older than that publishes again.
#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn ids_are_those_of_the_rooms_last_publishes() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("window");
    let mut few = message("a1", "}", 50);
    few.bounds.publish_ids = 3;
    let first = published(&mut conn, &room, &Publish { id: Some("k"), ..few }).await;
    for attempt in ["a2", "a3"] {
        published(&mut conn, &room, &Publish { attempt, ..few }).await;
    }
    let repeat = published(&mut conn, &room, &Publish { id: Some("k"), attempt: "a4", ..few }).await;
    assert_eq!((repeat.seq, repeat.repeated), (first.seq, true), "within the last 3");
    published(&mut conn, &room, &Publish { attempt: "a5", ..few }).await;
    let new = published(&mut conn, &room, &Publish { id: Some("k"), attempt: "a6", ..few }).await;
    assert_eq!((new.seq, new.repeated), (5, false), "4 publishes ago: a new publish");
    // Many more: what the room keeps of its records stays bounded.
    for n in 0..200 {
        let attempt = format!("b{n}");
        published(&mut conn, &room, &Publish { attempt: &attempt, ..few }).await;
    }
    let records: Vec<String> = redis::cmd("HKEYS").arg(&room.meta).query_async(&mut conn).await.unwrap();
    let records = records.iter().filter(|field| field.starts_with("r:")).count();
    assert!((3..=3 + 1).contains(&records), "{records} records for publish_ids = 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn publishers_on_several_connections_share_one_order() {
    let redis = Redis::start();
    let room = keys("busy");
    let mut pubsub = redis.subscribed(&[&room.channel]).await;
    // Three "nodes", each with its own connection, publishing at once.
    let mut nodes = Vec::new();
    for node in 0..3 {
        let mut conn = redis.connection().await;
        let room = room.clone();
        nodes.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..100 {
                let id = format!("node{node}-{n}");
                seqs.push(published(&mut conn, &room, &message(&format!("a:{id}"), "}", 500)).await.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for node in nodes {
        let seqs = node.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each node's publishes in its order");
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=300).collect::<Vec<u64>>(), "every seq once, none missing");
    let mut stream = pubsub.on_message();
    for expected in 1..=300u64 {
        let payload = common::next_payload(&mut stream).await;
        assert_eq!(Delivered::parse(&payload).unwrap().seq, expected, "the channel is in seq order");
    }
}

/// A node's view of one room during a flood while its pub/sub connection
/// is killed again and again: a `Feed` fed from the channel, repaired from
/// the history after every reconnect, delivers every message exactly once,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_feed_delivers_everything_once_while_its_pubsub_connection_is_killed() {
    use roomcast::broker::redis::history::range;
    use roomcast::registry::feed::{Feed, Step};

    const MESSAGES: u64 = 3000;
    let redis = Redis::start();
    let room = keys("flood");
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let publisher = {
        let mut conn = redis.connection().await;
        let room = room.clone();
        tokio::spawn(async move {
            for n in 1..=MESSAGES {
                let tail = format!(",\"n\":{n}}}");
                let seq = published(&mut conn, &room, &message(&format!("a:f{n}"), &tail, 10_000)).await.seq;
                let _ = progress_tx.send(seq);
            }
        })
    };
    let killer = {
        let mut conn = redis.connection().await;
        tokio::spawn(async move {
            let mut killed = 0u64;
            for at in [300, 900, 1500, 2100, 2700] {
                if progress.wait_for(|seq| *seq >= at).await.is_err() {
                    break;
                }
                let count: u64 =
                    redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
                killed += count;
            }
            killed
        })
    };

    let mut reader = redis.connection().await;
    let mut feed = Feed::new("", 0);
    let mut delivered = Vec::new();
    let (mut fetches, mut reconnects) = (0, 0);
    let deadline = tokio::time::Instant::now() + common::DEADLINE * 3;
    while feed.last() < MESSAGES {
        assert!(tokio::time::Instant::now() < deadline, "stuck at {} of {MESSAGES}", feed.last());
        // Subscribed (confirmed by Redis) before the history is read: no
        // message can fall between the two.
        let mut pubsub = redis.subscribed(&[&room.channel]).await;
        let mut steps = Vec::new();
        feed.reconnected(&mut steps);
        reconnects += 1;
        let mut stream = pubsub.on_message();
        loop {
            // Run every step; fetches answer into more steps.
            while !steps.is_empty() {
                for step in std::mem::take(&mut steps) {
                    match step {
                        Step::Deliver(seq, _) => delivered.push(seq),
                        Step::Fetch { from, to } => {
                            fetches += 1;
                            let got = range(&mut reader, &room, from, to).await.unwrap();
                            feed.repaired(&got.epoch, got.entries, &mut steps);
                        }
                        Step::Lost { from, to } => panic!("lost {from}..={to} with the whole history kept"),
                        Step::Restarted(_) => {}
                    }
                }
            }
            if feed.last() >= MESSAGES {
                break;
            }
            let Ok(next) = tokio::time::timeout(common::DEADLINE, stream.next()).await else {
                panic!("no message for {:?} at {}", common::DEADLINE, feed.last());
            };
            let Some(next) = next else { break }; // killed: connect again
            let payload: String = next.get_payload().unwrap();
            let arrival = Delivered::parse(&payload).unwrap();
            feed.arrived(
                arrival.seq,
                arrival.epoch,
                render(&room.room, arrival.seq, arrival.stored).into(),
                &mut steps,
            );
        }
    }
    publisher.await.unwrap();
    let killed = killer.await.unwrap();
    assert_eq!(delivered, (1..=MESSAGES).collect::<Vec<_>>(), "every message once, in order");
    assert!(killed >= 3 && reconnects >= 4, "the connection was killed {killed} times, reconnected {reconnects}");
    assert!(fetches >= reconnects, "every reconnect repaired from the history: {fetches} fetches");
}

/// A publish whose answer does not come in time (Redis paused past the
/// connection's response timeout) is settled: the node asks until Redis
/// says. On a connection that keeps what it sent, the publish runs first
/// and the question gets its `seq`; on one that reconnected, whichever
/// Redis runs first decides: published once, or closed and never run, and
/// the answer says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publish_whose_answer_is_late_gets_its_real_outcome() {
    let redis = Redis::start();
    let client = redis.client();
    let mut admin = redis.connection().await;
    let timeout = Duration::from_millis(200);
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    let mut kept = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
    let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(timeout));
    let mut managed = client.get_connection_manager_with_config(config).await.unwrap();
    // Redis knows the scripts already, so that an attempt is one EVALSHA
    // (the pause holds it) rather than a NOSCRIPT and a SCRIPT LOAD.
    roomcast::broker::redis::load_scripts(&mut admin).await.unwrap();
    for name in ["kept", "managed"] {
        let room = keys(name);
        let mut pubsub = redis.subscribed(&[&room.channel]).await;
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("WRITE").query_async(&mut admin).await.unwrap();
        let message = message("n1-1", ",\"body\":1}", 50);
        let (outcome, attempts) = match name {
            "managed" => publish_settled(&mut managed, &room, &message).await,
            _ => publish_settled(&mut kept, &room, &message).await,
        }
        .expect("an answer once Redis answers");
        assert!(attempts > 1, "{name}: the first answer was lost");
        let next = published(&mut admin, &room, &message_with_id("n1-2")).await;
        let mut stream = pubsub.on_message();
        match outcome {
            Outcome::Published(published) => {
                assert_eq!((published.seq, next.seq), (1, 2), "{name}: published once");
                let payload = common::next_payload(&mut stream).await;
                assert_eq!(Delivered::parse(&payload).unwrap().seq, 1, "{name}: delivered once");
            }
            Outcome::Closed => {
                assert_eq!(name, "managed", "on the same connection the publish runs first");
                assert_eq!(next.seq, 1, "{name}: the closed one never ran");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(history(&mut admin, &room).await.len() as u64, next.seq, "{name}: nothing else kept");
        let payload = common::next_payload(&mut stream).await;
        assert_eq!(Delivered::parse(&payload).unwrap().seq, next.seq, "{name}: nothing else arrived");
    }
}

fn message_with_id(record: &str) -> Publish<'_> {
    message(record, "}", 50)
}

/// The node's subscriber: messages of the rooms it subscribed to arrive
/// as frames; after a killed pub/sub connection, every room is subscribed
/// again and that is said (repairs follow); an unsubscribed room's
/// messages stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn the_subscriber_survives_its_connection_and_follows_its_rooms() {
    use roomcast::broker::Event;
    use roomcast::broker::redis::subscriber::Subscriber;

    let redis = Redis::start();
    let client = redis.client();
    let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
    let subscriber = Subscriber::start(client, "test".into(), 7, events_tx);
    let [a, b] = ["a", "b"].map(|name| RoomName::parse(name).unwrap());
    subscriber.subscribe(&a).await.unwrap();
    subscriber.subscribe(&b).await.unwrap();
    let mut conn = redis.connection().await;
    let mut next = async || tokio::time::timeout(common::DEADLINE, events.recv()).await.expect("an event").unwrap();
    let seq_of = |event: Event| match event {
        Event::Message { room, seq, frame, .. } => {
            assert!(frame.contains(&format!("\"seq\":{seq}")), "the frame carries its seq: {frame}");
            (room.as_str().to_string(), seq)
        }
        other => panic!("expected a message, got {other:?}"),
    };
    published(&mut conn, &keys("a"), &message_with_id("a:a1")).await;
    assert_eq!(seq_of(next().await), ("a".to_string(), 1));

    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
    assert!(matches!(next().await, Event::Resubscribed));
    published(&mut conn, &keys("b"), &message_with_id("a:b1")).await;
    assert_eq!(seq_of(next().await), ("b".to_string(), 1), "subscribed again after the reconnect");

    // The node's own channel carries `direct` messages for its sessions.
    let direct = roomcast::broker::redis::nodes::direct_channel("test", 7);
    let _: u64 = redis::cmd("PUBLISH").arg(&direct).arg("to 7").query_async(&mut conn).await.unwrap();
    assert!(matches!(next().await, Event::Direct(payload) if payload == "to 7"));

    subscriber.unsubscribe(&a);
    // Unsubscribing is confirmed by the next subscribe (same connection, in order).
    subscriber.subscribe(&b).await.unwrap();
    published(&mut conn, &keys("a"), &message_with_id("a:a2")).await;
    published(&mut conn, &keys("b"), &message_with_id("a:b2")).await;
    assert_eq!(seq_of(next().await), ("b".to_string(), 2), "a's message did not come");
}
