//! permessage-deflate's two halves (RFC 7692 section 7.2): a message
//! compressed as a raw DEFLATE stream ended by a sync flush whose last four
//! bytes (`00 00 ff ff`) are left off, and the same put back to inflate it.
//! Inflating is bounded while it runs: past `limit` bytes of output it
//! stops, so a small frame that would inflate to megabytes costs no more
//! than an honest message of the limit.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a sync flush ends with, and a message leaves off.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output is made in steps of this many bytes at most.
const STEP: usize = 16 * 1024;

/// Compresses messages; without `context`, each message on its own.
pub struct Deflater {
    compress: Compress,
    context: bool,
}

impl Deflater {
    /// A compressor at `level` (1..=9) with a window of 2^`window_bits`.
    pub fn new(level: u32, window_bits: u8, context: bool) -> Deflater {
        let level = Compression::new(level.clamp(1, 9));
        let compress = Compress::new_with_window_bits(level, false, window_bits);
        Deflater { compress, context }
    }

    /// `message` compressed, appended to `out`.
    pub fn deflate(&mut self, message: &[u8], out: &mut Vec<u8>) {
        if !self.context {
            self.compress.reset();
        }
        let start = out.len();
        let before = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - before) as usize;
            out.reserve(STEP.max(message.len() / 2));
            // Errors only on misuse of the stream, which this does not do.
            let _ = self.compress.compress_vec(&message[consumed..], out, FlushCompress::Sync);
            let consumed = (self.compress.total_in() - before) as usize;
            // Done when everything went in and the flush ended with room to spare.
            if consumed == message.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit (close 1009).
    TooBig,
    /// Not a DEFLATE stream (close 1007).
    Corrupt(String),
}

/// Inflates messages, fragment by fragment; without `context`, each
/// message on its own.
pub struct Inflater {
    decompress: Decompress,
    context: bool,
    /// Bytes of the current message inflated so far.
    made: usize,
}

impl Inflater {
    pub fn new(context: bool) -> Inflater {
        Inflater { decompress: Decompress::new(false), context, made: 0 }
    }

    /// Inflates one fragment's payload onto `out`, the whole message at
    /// most `limit` bytes.
    pub fn feed(&mut self, fragment: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.run(fragment, limit, out)
    }

    /// The message ended: its left-off tail goes in; the next message
    /// starts afresh (without context).
    pub fn finish(&mut self, limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let result = self.run(&TAIL, limit, out);
        self.made = 0;
        if !self.context || result.is_err() {
            self.decompress.reset(false);
        }
        result
    }

    /// A message abandoned half-way (the connection is closing).
    pub fn abandon(&mut self) {
        self.made = 0;
        self.decompress.reset(false);
    }

    fn run(&mut self, input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let before = self.decompress.total_in();
        loop {
            let consumed = (self.decompress.total_in() - before) as usize;
            // At most one byte past the limit, in steps: what is allocated
            // is bounded by the limit, not by what the stream claims.
            let room = limit.saturating_sub(self.made).saturating_add(1).min(STEP);
            let start = out.len();
            out.resize(start + room, 0);
            let produced_before = self.decompress.total_out();
            let status = self.decompress.decompress(&input[consumed..], &mut out[start..], FlushDecompress::Sync);
            let produced = (self.decompress.total_out() - produced_before) as usize;
            out.truncate(start + produced);
            let status = status.map_err(|error| InflateError::Corrupt(error.to_string()))?;
            self.made += produced;
            if self.made > limit {
                return Err(InflateError::TooBig);
            }
            let now = (self.decompress.total_in() - before) as usize;
            let drained = produced < room;
            if matches!(status, Status::StreamEnd) || (now == input.len() && drained) {
                return Ok(());
            }
            if now == consumed && produced == 0 {
                // No progress with input left and room to write: not DEFLATE.
                return Err(InflateError::Corrupt("the stream does not advance".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: &[u8], context: bool) -> Vec<u8> {
        let mut compressed = Vec::new();
        Deflater::new(3, 15, context).deflate(message, &mut compressed);
        let mut out = Vec::new();
        let mut inflater = Inflater::new(context);
        inflater.feed(&compressed, usize::MAX, &mut out).unwrap();
        inflater.finish(usize::MAX, &mut out).unwrap();
        out
    }

    #[test]
    fn messages_come_back_as_they_went() {
        for message in [&b""[..], b"a", b"{\"type\":\"message\",\"body\":\"hello hello hello\"}", &[7u8; 100_000]] {
            assert_eq!(round_trip(message, false), message);
            assert_eq!(round_trip(message, true), message);
        }
    }

    #[test]
    fn the_rfc_example_inflates() {
        // RFC 7692 section 7.2.3.1: "Hello" compressed.
        let mut out = Vec::new();
        let mut inflater = Inflater::new(false);
        inflater.feed(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap();
        inflater.finish(100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn a_shared_message_compresses_the_same_every_time() {
        let message = br#"{"type":"message","room":"r","seq":1,"body":"the same bytes for every member"}"#;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut deflater = Deflater::new(3, 15, false);
        deflater.deflate(message, &mut a);
        deflater.deflate(message, &mut b);
        assert_eq!(a, b, "no context: nothing carried from one message to the next");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut bomb = Vec::new();
        Deflater::new(9, 15, false).deflate(&vec![0u8; 50 << 20], &mut bomb);
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        let mut out = Vec::new();
        let mut inflater = Inflater::new(false);
        let limit = 64 * 1024;
        let result = inflater.feed(&bomb, limit, &mut out).and_then(|()| inflater.finish(limit, &mut out));
        assert_eq!(result, Err(InflateError::TooBig));
        assert!(out.len() <= limit + 1, "stopped at the limit: {}", out.len());
    }

    #[test]
    fn a_bomb_in_fragments_stops_at_the_limit_too() {
        let mut bomb = Vec::new();
        Deflater::new(9, 15, false).deflate(&vec![0u8; 10 << 20], &mut bomb);
        let (limit, mut out) = (64 * 1024, Vec::new());
        let mut inflater = Inflater::new(false);
        let mut result = Ok(());
        for fragment in bomb.chunks(bomb.len() / 1000 + 1) {
            result = inflater.feed(fragment, limit, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(InflateError::TooBig));
        assert!(out.len() <= limit + 1);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let mut out = Vec::new();
        let mut inflater = Inflater::new(false);
        let result = inflater.feed(&[0xff; 32], 1 << 20, &mut out).and_then(|()| inflater.finish(1 << 20, &mut out));
        assert!(matches!(result, Err(InflateError::Corrupt(_))), "{result:?}");
        // The next message starts afresh.
        inflater.feed(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap_or_default();
    }
}
