//! Node liveness in Redis (`shared/spec/cluster.md`), against a real
//! `redis-server`: a node that stops beating is declared dead once, soon
//! after `node_timeout`; a Redis that stops serving for twice the timeout
//! declares nobody dead; a node declared dead learns it when it beats again.

mod common;

use std::time::{Duration, Instant};

use common::Redis;
use roomcast::broker::redis::liveness::{Beat, Liveness};

const TIMEOUT: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_millis(200);

type Beats = Vec<(Instant, Beat)>;

/// A node beating every INTERVAL until it is stopped; every answered beat
/// (with when it came back) is published on its watch as it happens.
struct Node {
    beats: tokio::sync::watch::Receiver<Beats>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    fn start(redis: &Redis, name: &'static str) -> Node {
        let client = redis.client();
        let (beats_tx, beats) = tokio::sync::watch::channel(Beats::new());
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let liveness = Liveness::new("test");
            let mut ticks = tokio::time::interval(INTERVAL);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => return,
                }
                // A beat Redis does not answer in time (it is paused) is
                // simply not counted; the next tick beats again.
                if let Ok(beat) = liveness.beat(&mut conn, name, TIMEOUT).await {
                    beats_tx.send_modify(|beats| beats.push((Instant::now(), beat)));
                }
            }
        });
        Node { beats, stop, task }
    }

    /// Waits until `done` holds of the beats so far.
    async fn until(&mut self, done: impl Fn(&Beats) -> bool) {
        let waited = tokio::time::timeout(common::DEADLINE * 2, self.beats.wait_for(|beats| done(beats))).await;
        assert!(waited.is_ok_and(|seen| seen.is_ok()), "the beats never got there");
    }

    /// Waits until a beat answered at `instant` or later.
    async fn beaten_after(&mut self, instant: Instant) {
        self.until(|beats| beats.last().is_some_and(|(at, _)| *at >= instant)).await;
    }

    async fn stop(self) -> Beats {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
        self.beats.borrow().clone()
    }
}

fn dead(beats: &[(Instant, Beat)]) -> Vec<(Instant, String)> {
    beats.iter().flat_map(|(at, beat)| beat.dead.iter().map(|node| (*at, node.clone()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_node_that_stops_beating_is_declared_dead_once_within_the_timeout_and_a_second() {
    let redis = Redis::start();
    let mut a = Node::start(&redis, "a");
    let mut b = Node::start(&redis, "b");
    // Both alive for a while.
    a.until(|beats| beats.len() >= 3).await;
    b.until(|beats| beats.len() >= 3).await;
    let b_beats = b.stop().await;
    let b_last = b_beats.last().unwrap().0;
    // a finds b dead, then beats on for as long again: b is found once.
    a.until(|beats| !dead(beats).is_empty()).await;
    let found_at = dead(&a.beats.borrow())[0].0;
    a.beaten_after(found_at + TIMEOUT).await;
    let found = dead(&a.beats.borrow());
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
    let mut conn = redis.connection().await;
    let liveness = Liveness::new("test");
    assert!(liveness.beat(&mut conn, "b", TIMEOUT).await.unwrap().declared_dead);
    // A graceful leave is no death: a node beating on past the timeout
    // finds nobody dead.
    liveness.beat(&mut conn, "c", TIMEOUT).await.unwrap();
    liveness.leave(&mut conn, "c").await.unwrap();
    let left = Instant::now();
    let mut d = Node::start(&redis, "d");
    d.beaten_after(left + TIMEOUT + INTERVAL).await;
    let d_beats = d.stop().await;
    assert!(d_beats.iter().all(|(_, beat)| !beat.declared_dead && beat.dead.is_empty()), "{d_beats:?}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn a_redis_pause_of_twice_the_timeout_declares_nobody_dead() {
    let redis = Redis::start();
    let mut nodes = [Node::start(&redis, "a"), Node::start(&redis, "b")];
    for node in &mut nodes {
        node.until(|beats| beats.len() >= 3).await;
    }
    let mut admin = redis.connection().await;
    let pause = TIMEOUT * 2;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    // Through the pause and two timeouts after it.
    let through = Instant::now() + pause + TIMEOUT * 2;
    for node in &mut nodes {
        node.beaten_after(through).await;
    }
    for (name, node) in ["a", "b"].into_iter().zip(nodes) {
        let beats = node.stop().await;
        assert!(beats.len() >= 10, "{name} beat {} times", beats.len());
        assert!(dead(&beats).is_empty(), "{name} declared {:?} dead", dead(&beats));
        assert!(beats.iter().all(|(_, beat)| !beat.declared_dead), "{name} was declared dead");
    }
}

#[tokio::test]
#[cfg_attr(skip_redis, ignore = "redis-server is missing and SKIP_MISSING_TOOLS=1")]
async fn every_node_start_gets_a_number_of_its_own_and_so_do_its_sessions() {
    use roomcast::broker::redis::nodes::{node_of, register, session_id};
    let redis = Redis::start();
    let mut conn = redis.connection().await;
    let first = register(&mut conn, "test").await.unwrap();
    let second = register(&mut conn, "test").await.unwrap();
    assert_ne!(first, second);
    assert_eq!(register(&mut conn, "other-cluster").await.unwrap(), 1, "prefixes are separate clusters");
    let (a, b) = (session_id(first, 1).unwrap(), session_id(second, 1).unwrap());
    assert_ne!(a, b, "the first session of each node");
    assert_eq!((node_of(a), node_of(b)), (first, second));
}
