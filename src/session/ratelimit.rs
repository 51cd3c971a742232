//! The per-session token bucket of `limits.messages_per_second` and
//! `limits.burst`. The limit is shared by every session, so that SIGHUP
//! changes it for the connections already open: each bucket starts full
//! again under a new limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// `limits.messages_per_second` and `limits.burst`, as in effect.
pub struct RateLimit {
    per_second: AtomicU32,
    burst: AtomicU32,
    /// Counts the changes.
    generation: AtomicU64,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Arc<RateLimit> {
        Arc::new(RateLimit {
            per_second: AtomicU32::new(per_second),
            burst: AtomicU32::new(burst),
            generation: AtomicU64::new(0),
        })
    }

    pub fn set(&self, per_second: u32, burst: u32) {
        self.per_second.store(per_second, Ordering::Relaxed);
        self.burst.store(burst, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

pub struct TokenBucket {
    limit: Arc<RateLimit>,
    /// The limit's generation this bucket was filled under.
    generation: u64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Arc<RateLimit>) -> Self {
        let generation = limit.generation.load(Ordering::Acquire);
        let tokens = f64::from(limit.burst.load(Ordering::Relaxed));
        TokenBucket { limit, generation, tokens, refilled: Instant::now() }
    }

    /// Takes one token if there is one; a refused message takes none.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    /// After a refused [`TokenBucket::take`]: how long until the next token.
    pub fn next_token_in(&self) -> std::time::Duration {
        let per_second = f64::from(self.limit.per_second.load(Ordering::Relaxed)).max(f64::MIN_POSITIVE);
        std::time::Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) / per_second).min(3600.0))
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let capacity = f64::from(self.limit.burst.load(Ordering::Relaxed));
        let generation = self.limit.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            self.tokens = capacity;
        }
        let per_second = f64::from(self.limit.per_second.load(Ordering::Relaxed));
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let start = Instant::now();
        let limit = RateLimit::new(10, 3);
        let mut bucket = TokenBucket { refilled: start, ..TokenBucket::new(limit.clone()) };
        assert!((0..3).all(|_| bucket.take_at(start)));
        assert!(!bucket.take_at(start));
        assert!(!bucket.take_at(start + Duration::from_millis(50)), "half a token");
        assert!(bucket.take_at(start + Duration::from_millis(100)));
        assert!(!bucket.take_at(start + Duration::from_millis(100)));
        // never more than the burst
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.take_at(later)));
        assert!(!bucket.take_at(later));
        // A new limit: full again, at its size.
        limit.set(10, 5);
        assert!((0..5).all(|_| bucket.take_at(later)));
        assert!(!bucket.take_at(later));
    }
}
