//! Node liveness in Redis (`shared/spec/cluster.md`), against a real
//! `redis-server`: a node that stops beating is declared dead once, soon
//! after `node_timeout`; a Redis that stops serving for twice the timeout
//! declares nobody dead; a node declared dead learns it when it beats again.

mod common;

use std::time::{Duration, Instant};

use common::Redis;
use roomcast::cluster::liveness::{Beat, Liveness};

const TIMEOUT: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_millis(200);

async fn connection(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// A node beating every INTERVAL until `stop` turns true; returns every
/// answered beat's outcome with when it returned.
fn beating(
    redis: &Redis,
    node: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(Instant, Beat)>> {
    let url = redis.url();
    tokio::spawn(async move {
        let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
        let liveness = Liveness::new("test");
        let mut beats = Vec::new();
        let mut ticks = tokio::time::interval(INTERVAL);
        while !*stop.borrow() {
            ticks.tick().await;
            // A beat Redis does not answer in time (it is paused) is
            // simply not counted; the next tick beats again.
            if let Ok(beat) = liveness.beat(&mut conn, node, TIMEOUT).await {
                beats.push((Instant::now(), beat));
            }
        }
        beats
    })
}

fn dead(beats: &[(Instant, Beat)]) -> Vec<(Instant, String)> {
    beats.iter().flat_map(|(at, beat)| beat.dead.iter().map(|node| (*at, node.clone()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_node_that_stops_beating_is_declared_dead_once_within_the_timeout_and_a_second() {
    let redis = Redis::start();
    let (stop_a, a_stopped) = tokio::sync::watch::channel(false);
    let (stop_b, b_stopped) = tokio::sync::watch::channel(false);
    let a = beating(&redis, "a", a_stopped);
    let b = beating(&redis, "b", b_stopped);
    tokio::time::sleep(TIMEOUT).await; // both alive for a while
    stop_b.send(true).unwrap();
    let b_beats = b.await.unwrap();
    let b_last = b_beats.last().unwrap().0;
    tokio::time::sleep(TIMEOUT * 3).await; // long enough to be sure it is seen once only
    stop_a.send(true).unwrap();
    let a_beats = a.await.unwrap();
    let found = dead(&a_beats);
    assert_eq!(found.iter().map(|(_, node)| node.as_str()).collect::<Vec<_>>(), ["b"], "b, once");
    // Measured here, from when b's last beat came back to when a's beat
    // that found it dead came back: Redis judged on its own clock, so this
    // can be short of the timeout by a round trip.
    let after = found[0].0 - b_last;
    let round_trip = Duration::from_millis(50);
    assert!(
        after >= TIMEOUT - round_trip && after <= TIMEOUT + Duration::from_secs(1),
        "declared dead {after:?} after its last beat"
    );
    assert!(dead(&b_beats).is_empty(), "b saw nobody die");
    // b comes back: it is told it was declared dead, and must start again.
    let mut conn = connection(&redis).await;
    let liveness = Liveness::new("test");
    assert!(liveness.beat(&mut conn, "b", TIMEOUT).await.unwrap().declared_dead);
    // A graceful leave is no death.
    liveness.beat(&mut conn, "c", TIMEOUT).await.unwrap();
    liveness.leave(&mut conn, "c").await.unwrap();
    tokio::time::sleep(TIMEOUT + INTERVAL).await;
    let beat = liveness.beat(&mut conn, "a", TIMEOUT).await.unwrap();
    assert!(!beat.declared_dead && beat.dead.is_empty(), "{beat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_redis_pause_of_twice_the_timeout_declares_nobody_dead() {
    let redis = Redis::start();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let a = beating(&redis, "a", stopped.clone());
    let b = beating(&redis, "b", stopped);
    tokio::time::sleep(TIMEOUT).await;
    let mut admin = connection(&redis).await;
    let pause = (TIMEOUT * 2).as_millis() as u64;
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(pause).arg("ALL").query_async(&mut admin).await.unwrap();
    // Through the pause and two timeouts after it.
    tokio::time::sleep(TIMEOUT * 2 + TIMEOUT * 2).await;
    stop.send(true).unwrap();
    for (node, beats) in [("a", a.await.unwrap()), ("b", b.await.unwrap())] {
        assert!(beats.len() >= 10, "{node} beat {} times", beats.len());
        assert!(dead(&beats).is_empty(), "{node} declared {:?} dead", dead(&beats));
        assert!(beats.iter().all(|(_, beat)| !beat.declared_dead), "{node} was declared dead");
    }
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn every_node_start_gets_a_number_of_its_own_and_so_do_its_sessions() {
    use roomcast::cluster::nodes::{node_of, register, session_id};
    let redis = Redis::start();
    let mut conn = connection(&redis).await;
    let first = register(&mut conn, "test").await.unwrap();
    let second = register(&mut conn, "test").await.unwrap();
    assert_ne!(first, second);
    assert_eq!(register(&mut conn, "other-cluster").await.unwrap(), 1, "prefixes are separate clusters");
    let (a, b) = (session_id(first, 1).unwrap(), session_id(second, 1).unwrap());
    assert_ne!(a, b, "the first session of each node");
    assert_eq!((node_of(a), node_of(b)), (first, second));
}
