//! What a node has delivered of one room, and what it still owes: the
//! messages of a room arrive on its Redis channel in `seq` order, but a
//! node can miss some (its pub/sub connection dropped, Redis failed over),
//! and a member must never see a gap it is not told of. A [`Feed`] takes
//! each arrival and says what to do: deliver, skip a duplicate, or fetch a
//! missing range from the room's history (and deliver what waited behind
//! it, in order). Without I/O, so every case is tested here; the broker
//! runs the fetches.

use std::collections::BTreeMap;

use bytestring::ByteString;

/// Arrivals a feed keeps behind a gap while it is fetched; later ones are
/// not kept (they are in the history) and are fetched after it.
pub const MAX_WAITING: usize = 1024;

/// What the node should do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Give this `message` frame to the room's members on this node.
    Deliver(u64, ByteString),
    /// Read the history from `from` on (to `to` when known): the answer goes
    /// to [`Feed::repaired`].
    Fetch { from: u64, to: Option<u64> },
    /// Messages `from..=to` are gone from the history: the members must be
    /// told they missed them (`recovered: false`).
    Lost { from: u64, to: u64 },
    /// The room started again (a new epoch): what follows counts from 1.
    Restarted(String),
}

#[derive(Debug)]
pub struct Feed {
    epoch: String,
    /// The next `seq` to deliver.
    next: u64,
    /// Arrivals past a gap, waiting for the gap to be fetched.
    waiting: BTreeMap<u64, ByteString>,
    /// A fetch is on its way, up to this `seq` (`None`: to the end).
    fetching: Option<Option<u64>>,
    /// A reconnect came while a fetch was out: fetch to the end after it.
    refetch: bool,
    /// Not yet anchored: the first join's reply says where the room is.
    unanchored: Option<Early>,
}

/// What happened to a feed before it knew where its room was.
#[derive(Debug, Default)]
struct Early {
    /// At most [`MAX_WAITING`]; later ones are read from the history.
    arrivals: Vec<(u64, String, ByteString)>,
    /// Read the history to the end once anchored: the connection dropped,
    /// or arrivals were not kept.
    fetch_to_end: bool,
}

impl Feed {
    /// A feed that has delivered everything up to `last` of `epoch` (what
    /// the join read from the history).
    pub fn new(epoch: &str, last: u64) -> Feed {
        Feed {
            epoch: epoch.to_string(),
            next: last + 1,
            waiting: BTreeMap::new(),
            fetching: None,
            refetch: false,
            unanchored: None,
        }
    }

    /// A feed subscribed to its room's channel before the node knows the
    /// room's `seq`: arrivals wait for [`Feed::anchor`].
    pub fn unanchored() -> Feed {
        Feed { unanchored: Some(Early::default()), ..Feed::new("", 0) }
    }

    pub fn is_anchored(&self) -> bool {
        self.unanchored.is_none()
    }

    /// The room was at `top` of `epoch` when the node's first member joined
    /// (after the node subscribed): what arrived meanwhile is replayed.
    pub fn anchor(&mut self, epoch: &str, top: u64, steps: &mut Vec<Step>) {
        let Some(early) = self.unanchored.take() else {
            return;
        };
        self.epoch = epoch.to_string();
        self.next = top + 1;
        for (seq, epoch, frame) in early.arrivals {
            self.arrived(seq, &epoch, frame, steps);
        }
        if early.fetch_to_end {
            self.reconnected(steps);
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last `seq` delivered.
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    fn restart(&mut self, epoch: &str, steps: &mut Vec<Step>) {
        // The room was forgotten (or Redis lost it) and started again:
        // nothing of the old numbering is owed any more.
        self.epoch = epoch.to_string();
        self.next = 1;
        self.waiting.clear();
        steps.push(Step::Restarted(epoch.to_string()));
    }

    fn fetch(&mut self, to: Option<u64>, steps: &mut Vec<Step>) {
        self.fetching = Some(to);
        steps.push(Step::Fetch { from: self.next, to });
    }

    /// A message from the room's channel.
    pub fn arrived(&mut self, seq: u64, epoch: &str, frame: ByteString, steps: &mut Vec<Step>) {
        if let Some(early) = &mut self.unanchored {
            match early.arrivals.len() < MAX_WAITING {
                true => early.arrivals.push((seq, epoch.to_string(), frame)),
                false => early.fetch_to_end = true,
            }
            return;
        }
        if epoch != self.epoch {
            self.fetching = None;
            self.restart(epoch, steps);
        }
        if seq < self.next || self.waiting.contains_key(&seq) {
            return; // a duplicate: delivered or waiting already
        }
        if seq == self.next && self.fetching.is_none() {
            self.next += 1;
            steps.push(Step::Deliver(seq, frame));
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            // Bounded: read from the history once what waits is delivered.
            self.refetch = true;
            return;
        }
        self.waiting.insert(seq, frame);
        if self.fetching.is_none() {
            self.fetch(Some(seq - 1), steps);
        }
    }

    /// The channel's connection was lost and is back: anything may have
    /// been missed meanwhile, up to whatever the room's `seq` is now.
    pub fn reconnected(&mut self, steps: &mut Vec<Step>) {
        if let Some(early) = &mut self.unanchored {
            early.fetch_to_end = true;
            return;
        }
        match self.fetching {
            None => self.fetch(None, steps),
            Some(_) => self.refetch = true,
        }
    }

    /// The answer to a [`Step::Fetch`]: the history's entries in the
    /// fetched range, oldest first, and the room's `epoch`.
    pub fn repaired(&mut self, epoch: &str, entries: Vec<(u64, String)>, steps: &mut Vec<Step>) {
        let Some(requested_to) = self.fetching.take() else {
            return; // answers a fetch a new epoch made moot
        };
        if epoch != self.epoch {
            self.restart(epoch, steps);
        }
        for (seq, frame) in entries {
            if seq < self.next {
                continue;
            }
            if seq > self.next {
                // The history is contiguous: what it lacks before its
                // first entry was trimmed.
                steps.push(Step::Lost { from: self.next, to: seq - 1 });
                self.waiting.retain(|waiting, _| *waiting > seq);
            }
            self.waiting.remove(&seq);
            self.next = seq + 1;
            steps.push(Step::Deliver(seq, frame.into()));
        }
        loop {
            // Whatever waited behind the gap, as far as it is contiguous.
            while let Some(entry) = self.waiting.first_entry() {
                if *entry.key() != self.next {
                    break;
                }
                let seq = *entry.key();
                steps.push(Step::Deliver(seq, entry.remove()));
                self.next = seq + 1;
            }
            let Some(&seq) = self.waiting.keys().next() else {
                if std::mem::take(&mut self.refetch) {
                    self.fetch(None, steps);
                }
                return;
            };
            match requested_to {
                // The fetch covered the gap and the history lacked it: it
                // was trimmed before the fetch could read it.
                Some(to) if to >= seq - 1 => {
                    steps.push(Step::Lost { from: self.next, to: seq - 1 });
                    self.next = seq;
                }
                // A gap the fetch did not cover (a later drop): fetch it.
                _ => return self.fetch(Some(seq - 1), steps),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> ByteString {
        format!("m{seq}").into()
    }

    fn arrive(feed: &mut Feed, seqs: &[u64]) -> Vec<Step> {
        let mut steps = Vec::new();
        for &seq in seqs {
            feed.arrived(seq, "e1", frame(seq), &mut steps);
        }
        steps
    }

    fn delivered(steps: &[Step]) -> Vec<u64> {
        steps.iter().filter_map(|step| if let Step::Deliver(seq, _) = step { Some(*seq) } else { None }).collect()
    }

    fn history(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
        seqs.map(|seq| (seq, frame(seq).to_string())).collect()
    }

    #[test]
    fn in_order_arrivals_are_delivered_and_duplicates_skipped() {
        let mut feed = Feed::new("e1", 3);
        let steps = arrive(&mut feed, &[3, 4, 5, 5, 6]);
        assert_eq!(delivered(&steps), [4, 5, 6]);
        assert_eq!(steps.len(), 3);
        assert_eq!(feed.last(), 6);
    }

    #[test]
    fn a_gap_is_fetched_and_what_waited_behind_it_follows_in_order() {
        let mut feed = Feed::new("e1", 0);
        let steps = arrive(&mut feed, &[1, 4, 5, 4]);
        assert_eq!(steps, [Step::Deliver(1, frame(1)), Step::Fetch { from: 2, to: Some(3) }]);
        // More arrive while the fetch is out; one fills nothing yet.
        let steps = arrive(&mut feed, &[2, 6]);
        assert!(delivered(&steps).is_empty(), "nothing overtakes the fetch: {steps:?}");
        let mut steps = Vec::new();
        feed.repaired("e1", history(2..=6), &mut steps);
        assert_eq!(delivered(&steps), [2, 3, 4, 5, 6]);
        assert_eq!(feed.last(), 6);
        assert_eq!(delivered(&arrive(&mut feed, &[7])), [7]);
    }

    #[test]
    fn a_reconnect_fetches_everything_since_the_last_delivered() {
        let mut feed = Feed::new("e1", 10);
        let mut steps = Vec::new();
        feed.reconnected(&mut steps);
        assert_eq!(steps, [Step::Fetch { from: 11, to: None }]);
        let arrivals = arrive(&mut feed, &[14]);
        assert!(arrivals.is_empty(), "waits for the fetch: {arrivals:?}");
        let mut steps = Vec::new();
        feed.repaired("e1", history(11..=13), &mut steps);
        assert_eq!(delivered(&steps), [11, 12, 13, 14]);
    }

    #[test]
    fn what_the_history_no_longer_holds_is_reported_lost_once() {
        let mut feed = Feed::new("e1", 1);
        arrive(&mut feed, &[9]);
        let mut steps = Vec::new();
        // The history was trimmed: it starts at 6.
        feed.repaired("e1", history(6..=9), &mut steps);
        assert_eq!(steps[0], Step::Lost { from: 2, to: 5 });
        assert_eq!(delivered(&steps), [6, 7, 8, 9]);
        // Trimmed further than what waited: the rest is lost, then delivered.
        let mut feed = Feed::new("e1", 1);
        arrive(&mut feed, &[9, 10]);
        let mut steps = Vec::new();
        feed.repaired("e1", Vec::new(), &mut steps);
        assert_eq!(steps[0], Step::Lost { from: 2, to: 8 });
        assert_eq!(delivered(&steps), [9, 10]);
    }

    #[test]
    fn a_second_gap_behind_the_first_is_fetched_not_given_up() {
        let mut feed = Feed::new("e1", 1);
        arrive(&mut feed, &[4]);
        // While 2..=3 are fetched, 5 and 6 are missed and 7 arrives.
        arrive(&mut feed, &[7]);
        let mut steps = Vec::new();
        feed.repaired("e1", history(2..=3), &mut steps);
        assert_eq!(delivered(&steps), [2, 3, 4]);
        assert_eq!(steps.last(), Some(&Step::Fetch { from: 5, to: Some(6) }));
        let mut steps = Vec::new();
        feed.repaired("e1", history(5..=6), &mut steps);
        assert_eq!(delivered(&steps), [5, 6, 7]);
    }

    #[test]
    fn an_unanchored_feed_replays_what_arrived_once_anchored() {
        let mut feed = Feed::unanchored();
        let mut steps = Vec::new();
        feed.arrived(5, "e1", frame(5), &mut steps);
        feed.arrived(7, "e1", frame(7), &mut steps);
        feed.reconnected(&mut steps);
        assert!(steps.is_empty());
        feed.anchor("e1", 5, &mut steps);
        assert_eq!(steps, [Step::Fetch { from: 6, to: Some(6) }], "5 was in the join's read; 6 is missing");
        let mut steps = Vec::new();
        feed.repaired("e1", history(6..=8), &mut steps);
        assert_eq!(delivered(&steps), [6, 7, 8]);
        assert_eq!(steps.last(), Some(&Step::Fetch { from: 9, to: None }), "the reconnect's fetch follows");
        assert!(feed.is_anchored());
    }

    #[test]
    fn what_arrives_before_the_anchor_is_bounded_and_the_rest_fetched() {
        let mut feed = Feed::unanchored();
        let mut steps = Vec::new();
        for seq in 1..=MAX_WAITING as u64 + 50 {
            feed.arrived(seq, "e1", frame(seq), &mut steps);
        }
        assert!(steps.is_empty());
        feed.anchor("e1", 0, &mut steps);
        assert_eq!(delivered(&steps).len(), MAX_WAITING, "what was kept");
        let kept = MAX_WAITING as u64;
        assert_eq!(steps.last(), Some(&Step::Fetch { from: kept + 1, to: None }), "the rest from history");
    }

    #[test]
    fn what_waits_behind_a_gap_is_bounded_and_the_rest_fetched_after() {
        let mut feed = Feed::new("e1", 0);
        let seqs: Vec<u64> = (2..=MAX_WAITING as u64 + 100).collect();
        let steps = arrive(&mut feed, &seqs);
        assert_eq!(steps, [Step::Fetch { from: 1, to: Some(1) }]);
        let mut steps = Vec::new();
        feed.repaired("e1", history(1..=1), &mut steps);
        assert_eq!(delivered(&steps).len(), MAX_WAITING + 1, "1 and what was kept");
        let last = MAX_WAITING as u64 + 1;
        assert_eq!(steps.last(), Some(&Step::Fetch { from: last + 1, to: None }), "the rest from history");
        let mut steps = Vec::new();
        feed.repaired("e1", history(last + 1..=last + 99), &mut steps);
        assert_eq!(feed.last(), MAX_WAITING as u64 + 100);
    }

    #[test]
    fn a_new_epoch_starts_the_count_again() {
        let mut feed = Feed::new("e1", 40);
        let mut steps = Vec::new();
        feed.arrived(1, "e2", frame(1), &mut steps);
        assert_eq!(steps, [Step::Restarted("e2".into()), Step::Deliver(1, frame(1))]);
        let mut steps = Vec::new();
        feed.arrived(3, "e2", frame(3), &mut steps);
        assert_eq!(steps, [Step::Fetch { from: 2, to: Some(2) }]);
        let mut steps = Vec::new();
        feed.repaired("e2", history(2..=3), &mut steps);
        assert_eq!(delivered(&steps), [2, 3]);
        assert_eq!(feed.epoch(), "e2");
    }
}
