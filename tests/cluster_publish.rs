//! The Redis side of a clustered publish (`shared/spec/cluster.md`), against
//! a real `redis-server`: one script gives each message its `seq`, keeps it
//! in the room's history and publishes it, atomically; a retried publish
//! never gets a second `seq`. (The nodes that use it come with the broker.)

mod common;

use common::Redis;
use futures_util::StreamExt;
use roomcast::cluster::keys::RoomKeys;
use roomcast::cluster::publish::{Delivered, Publish, Published, publish};
use roomcast::protocol::RoomName;

fn keys(room: &str) -> RoomKeys {
    RoomKeys::new("test", &RoomName::parse(room).unwrap())
}

fn message<'a>(id: &'a str, tail: &'a str, max_history: usize) -> Publish<'a> {
    Publish { id, head: "{\"seq\":", tail, max_history }
}

/// Every entry of the room's history: (id, frame).
async fn history(connection: &mut redis::aio::MultiplexedConnection, keys: &RoomKeys) -> Vec<(String, String)> {
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(&keys.history).arg("-").arg("+").query_async(connection).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let frame: String = entry.get("f").expect("a frame field");
            (entry.id, frame)
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
        let done = publish(&mut conn, &room, &message(&format!("p{n}"), &tail, 50)).await.unwrap();
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
        assert_eq!(delivered.frame, format!("{{\"seq\":{n},\"body\":{n}}}"), "head, seq, tail");
    }
    let kept = history(&mut conn, &room).await;
    let ids: Vec<&str> = kept.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0", "5-0"], "the entry id is the seq");
    assert_eq!(kept[2].1, "{\"seq\":3,\"body\":3}");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_retried_publish_is_published_once() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("retries");
    let first = publish(&mut conn, &room, &message("node1-7", ",\"body\":1}", 50)).await.unwrap();
    // The same publish again, as after a timeout that hid the first reply.
    let again = publish(&mut conn, &room, &message("node1-7", ",\"body\":1}", 50)).await.unwrap();
    assert_eq!(again, Published { repeated: true, ..first.clone() });
    assert_eq!(history(&mut conn, &room).await.len(), 1, "kept once");
    let next = publish(&mut conn, &room, &message("node1-8", ",\"body\":2}", 50)).await.unwrap();
    assert_eq!(next.seq, first.seq + 1, "no seq was spent on the retry");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn history_keeps_the_newest_messages() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("capped");
    for n in 1..=7 {
        publish(&mut conn, &room, &message(&format!("c{n}"), "}", 3)).await.unwrap();
    }
    let ids: Vec<String> = history(&mut conn, &room).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["5-0", "6-0", "7-0"]);
    let none = keys("no-history");
    publish(&mut conn, &none, &message("n1", "}", 0)).await.unwrap();
    assert!(history(&mut conn, &none).await.is_empty(), "rooms.history = 0 keeps nothing");
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_room_whose_data_was_lost_starts_again_with_a_new_epoch() {
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let room = keys("lost");
    let before = publish(&mut conn, &room, &message("l1", "}", 50)).await.unwrap();
    publish(&mut conn, &room, &message("l2", "}", 50)).await.unwrap();
    // Redis lost the room's counter (a restart without persistence, an
    // eviction) but not its history.
    let _: () = redis::cmd("DEL").arg(&room.meta).query_async(&mut conn).await.unwrap();
    let after = publish(&mut conn, &room, &message("l3", "}", 50)).await.unwrap();
    assert_eq!(after.seq, 1);
    assert_ne!(after.epoch, before.epoch, "a new numbering is a new epoch");
    let ids: Vec<String> = history(&mut conn, &room).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["1-0"], "the old entries do not mix with the new numbering");
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
                seqs.push(publish(&mut conn, &room, &message(&id, "}", 500)).await.unwrap().seq);
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
    use roomcast::cluster::feed::{Feed, Step};
    use roomcast::cluster::history::range;

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
                let seq = publish(&mut conn, &room, &message(&format!("f{n}"), &tail, 10_000)).await.unwrap().seq;
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
            feed.arrived(arrival.seq, arrival.epoch, arrival.frame.to_string(), &mut steps);
        }
    }
    publisher.await.unwrap();
    let killed = killer.await.unwrap();
    assert_eq!(delivered, (1..=MESSAGES).collect::<Vec<_>>(), "every message once, in order");
    assert!(killed >= 3 && reconnects >= 4, "the connection was killed {killed} times, reconnected {reconnects}");
    assert!(fetches >= reconnects, "every reconnect repaired from the history: {fetches} fetches");
}

/// A publish whose answer does not come in time (Redis paused past the
/// connection's response timeout) is tried again with the same id. Whether
/// the first attempt ran after all (its command waited on the same
/// connection) or was dropped with its connection, the message gets one
/// `seq`, one history entry and one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_publish_retried_after_a_timeout_is_delivered_once() {
    use roomcast::cluster::publish::publish_retrying;
    use std::time::Duration;

    let redis = Redis::start();
    let client = redis.client();
    let mut admin = redis.connection().await;
    let timeout = Duration::from_millis(200);
    // One connection that keeps what it sent (the first attempt runs when
    // the pause ends, before the retry), one that reconnects on a timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    let mut kept = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
    let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(timeout));
    let mut managed = client.get_connection_manager_with_config(config).await.unwrap();
    // Redis knows the script already, so that an attempt is one EVALSHA
    // (the pause holds it) rather than a NOSCRIPT and a SCRIPT LOAD.
    publish(&mut admin, &keys("warm-up"), &message_with_id("w1")).await.unwrap();
    for (name, first_runs) in [("kept", true), ("managed", false)] {
        let room = keys(name);
        let mut pubsub = redis.subscribed(&[&room.channel]).await;
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("WRITE").query_async(&mut admin).await.unwrap();
        let message = message("n1-1", ",\"body\":1}", 50);
        let (published, attempts) = match name {
            "kept" => publish_retrying(&mut kept, &room, &message, common::DEADLINE).await,
            _ => publish_retrying(&mut managed, &room, &message, common::DEADLINE).await,
        }
        .expect("published once Redis answers");
        assert!(attempts > 1, "{name}: the first attempt timed out");
        assert_eq!(published.seq, 1, "{name}");
        if first_runs {
            assert!(published.repeated, "{name}: the first attempt ran late and the retry got its outcome");
        }
        assert_eq!(history(&mut admin, &room).await.len(), 1, "{name}: kept once");
        let next = publish(&mut admin, &room, &message_with_id("n1-2")).await.unwrap();
        assert_eq!(next.seq, 2, "{name}: the retry spent no seq");
        let mut stream = pubsub.on_message();
        for expected in [1, 2] {
            let payload = common::next_payload(&mut stream).await;
            assert_eq!(Delivered::parse(&payload).unwrap().seq, expected, "{name}: one delivery each");
        }
    }
}

fn message_with_id(id: &str) -> Publish<'_> {
    message(id, "}", 50)
}

/// The node's subscriber: messages of the rooms it subscribed to arrive;
/// a killed pub/sub connection is reported lost, then reconnected with
/// every room subscribed again; an unsubscribed room's messages stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn the_subscriber_survives_its_connection_and_follows_its_rooms() {
    use roomcast::cluster::subscriber::{Event, Subscriber};

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
        Event::Arrived { room, payload } => {
            (room.as_str().to_string(), Delivered::parse(std::str::from_utf8(&payload).unwrap()).unwrap().seq)
        }
        other => panic!("expected a message, got {other:?}"),
    };
    publish(&mut conn, &keys("a"), &message_with_id("a1")).await.unwrap();
    assert_eq!(seq_of(next().await), ("a".to_string(), 1));

    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
    assert!(matches!(next().await, Event::Lost(_)));
    assert_eq!(next().await, Event::Reconnected);
    publish(&mut conn, &keys("b"), &message_with_id("b1")).await.unwrap();
    assert_eq!(seq_of(next().await), ("b".to_string(), 1), "subscribed again after the reconnect");

    // The node's own channel carries `direct` messages for its sessions.
    let direct = roomcast::cluster::nodes::direct_channel("test", 7);
    let _: u64 = redis::cmd("PUBLISH").arg(&direct).arg("to 7").query_async(&mut conn).await.unwrap();
    assert_eq!(next().await, Event::Direct("to 7".into()));

    subscriber.unsubscribe(&a);
    // Unsubscribing is confirmed by the next subscribe (same connection, in order).
    subscriber.subscribe(&b).await.unwrap();
    publish(&mut conn, &keys("a"), &message_with_id("a2")).await.unwrap();
    publish(&mut conn, &keys("b"), &message_with_id("b2")).await.unwrap();
    assert_eq!(seq_of(next().await), ("b".to_string(), 2), "a's message did not come");
}
