//! The lines `roomcast client` publishes, until the server has them: those
//! typed while disconnected wait (bounded, like the JavaScript library: at
//! most 1,000 lines or 1 MiB) and go out once the rooms are joined again;
//! those on their way when a connection drops are sent again. Each carries
//! an idempotency `id`, so a line sent twice appears once.

use std::collections::{BTreeMap, VecDeque};

/// Lines that may wait for a connection, and their bytes.
pub const MAX_WAITING: usize = 1000;
pub const MAX_WAITING_BYTES: usize = 1 << 20;

/// A line for a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub room: String,
    pub text: String,
    /// Its idempotency key.
    pub id: String,
}

#[derive(Debug)]
pub struct Lines {
    /// Lines not sent yet, oldest first, and their bytes.
    waiting: VecDeque<Line>,
    bytes: usize,
    /// Lines sent and not answered yet, by the request's ref.
    sent: BTreeMap<u64, Line>,
    /// Makes ids unique to this client: a random prefix, then a count.
    prefix: String,
    count: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            waiting: VecDeque::new(),
            bytes: 0,
            sent: BTreeMap::new(),
            prefix: format!("{:016x}", fastrand::u64(..)),
            count: 0,
        }
    }
}

impl Lines {
    /// A new line for `room`.
    pub fn line(&mut self, room: String, text: String) -> Line {
        self.count += 1;
        Line { room, text, id: format!("{}-{}", self.prefix, self.count) }
    }

    /// Keeps `line` for the next connection; gives it back when too much
    /// waits already.
    pub fn wait(&mut self, line: Line) -> Result<(), Line> {
        if self.waiting.len() >= MAX_WAITING || self.bytes + line.text.len() > MAX_WAITING_BYTES {
            return Err(line);
        }
        self.bytes += line.text.len();
        self.waiting.push_back(line);
        Ok(())
    }

    /// `line` went out as request `reference`.
    pub fn sent(&mut self, reference: u64, line: Line) {
        self.sent.insert(reference, line);
    }

    /// The answer to request `reference`: the line it was, if one.
    pub fn answered(&mut self, reference: u64) -> Option<Line> {
        self.sent.remove(&reference)
    }

    /// The connection dropped: what was on its way is sent again first.
    /// Returns how many lines that was.
    pub fn resend_sent(&mut self) -> usize {
        let sent = std::mem::take(&mut self.sent);
        let count = sent.len();
        for line in sent.into_values().rev() {
            self.bytes += line.text.len();
            self.waiting.push_front(line);
        }
        count
    }

    /// A line to send again later (the server could not take it now).
    pub fn retry(&mut self, line: Line) {
        self.bytes += line.text.len();
        self.waiting.push_back(line);
    }

    /// Every waiting line, oldest first, to send now.
    pub fn take_waiting(&mut self) -> Vec<Line> {
        self.bytes = 0;
        self.waiting.drain(..).collect()
    }

    pub fn any_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Lines sent or waiting that the server does not have yet.
    pub fn unsent(&self) -> impl Iterator<Item = &Line> {
        self.sent.values().chain(&self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_bounded_and_what_was_on_its_way_goes_first() {
        let mut lines = Lines::default();
        let first = lines.line("r".into(), "one".into());
        let second = lines.line("r".into(), "two".into());
        assert_ne!(first.id, second.id);
        lines.sent(7, first.clone());
        lines.wait(second.clone()).unwrap();
        assert_eq!(lines.resend_sent(), 1);
        assert_eq!(lines.take_waiting(), [first, second]);
        for n in 0..MAX_WAITING {
            let line = lines.line("r".into(), n.to_string());
            lines.wait(line).unwrap();
        }
        let extra = lines.line("r".into(), "extra".into());
        assert_eq!(lines.wait(extra.clone()), Err(extra));
        let big = Lines::default().line("r".into(), "x".repeat(MAX_WAITING_BYTES + 1));
        assert!(Lines::default().wait(big).is_err());
    }
}
