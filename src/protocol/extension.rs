//! The `permessage-deflate` offer and answer of a WebSocket handshake
//! (RFC 7692 sections 5 and 7.1): every `Sec-WebSocket-Extensions` header
//! read, every offer in them parsed, the first one this server can honour
//! answered. An offer it cannot do (a parameter it does not know, one given
//! twice, a bad value, a window it cannot make) is passed over, never a
//! reason to fail the handshake (RFC 7692 section 5: the server declines by
//! answering without it).

/// How messages are compressed (`compression.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// No compression state outlives a message on either side: a room
    /// message is compressed once for every member that negotiated it.
    Shared,
    /// Each connection keeps its contexts (better for small frames, memory
    /// per connection).
    Context,
}

/// What both sides agreed on for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The server starts every message with an empty window.
    pub server_no_context_takeover: bool,
    /// The client does, so the server's inflater keeps nothing between
    /// messages.
    pub client_no_context_takeover: bool,
    /// The window the server compresses with (LZ77 window of 2^bits).
    pub server_max_window_bits: u8,
    /// The window the client compresses with, as far as the server knows
    /// (15 unless it answered a smaller one).
    pub client_max_window_bits: u8,
}

/// The smallest window the compressor can make: zlib (and zlib-rs) make a
/// raw deflate stream of 2^8 as 2^9, which a client held to 8 bits could not
/// read (RFC 7692 section 7.1.2.1 notes it).
pub const MIN_SERVER_WINDOW_BITS: u8 = 9;

/// The answer to the offers in `headers` (each a `Sec-WebSocket-Extensions`
/// value, in order), if one of them is a `permessage-deflate` this server
/// can honour in `sharing` mode.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>, sharing: Sharing) -> Option<Deflate> {
    headers.into_iter().flat_map(split_outside_quotes(',')).find_map(|offer| accept(offer, sharing))
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the answer.
    pub fn header(&self) -> String {
        let mut answer = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            answer.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        }
        if self.client_max_window_bits < 15 {
            answer.push_str(&format!("; client_max_window_bits={}", self.client_max_window_bits));
        }
        answer
    }
}

/// One offer (`permessage-deflate; a; b=1`), answered if this server can.
fn accept(offer: &str, sharing: Sharing) -> Option<Deflate> {
    let mut parts = split_outside_quotes(';')(offer);
    if !parts.next()?.trim().eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let shared = sharing == Sharing::Shared;
    let mut deflate = Deflate {
        server_no_context_takeover: shared,
        client_no_context_takeover: shared,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    let mut seen: Vec<String> = Vec::new();
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim().to_ascii_lowercase(), Some(unquote(value.trim())?)),
            None => (parameter.trim().to_ascii_lowercase(), None),
        };
        // A parameter given twice makes the offer invalid (section 7).
        if seen.contains(&name) {
            return None;
        }
        seen.push(name.clone());
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => deflate.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => deflate.client_no_context_takeover = true,
            ("server_max_window_bits", Some(bits)) => {
                let bits = window_bits(bits)?;
                if bits < MIN_SERVER_WINDOW_BITS {
                    return None;
                }
                deflate.server_max_window_bits = bits;
            }
            // The client may be told a window; it keeps its own otherwise.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(bits)) => {
                window_bits(bits)?;
            }
            _ => return None,
        }
    }
    Some(deflate)
}

/// A window size: 8 to 15, digits only, no leading zero (section 7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// A parameter value, as a token or a quoted string (RFC 7230 3.2.6).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|inner| !inner.contains(['"', '\\'])),
        None => Some(value).filter(|token| !token.is_empty() && !token.contains('"')),
    }
}

/// Splits on `separator` where it is not inside a quoted string.
fn split_outside_quotes(separator: char) -> impl Fn(&str) -> std::vec::IntoIter<&str> {
    move |text: &str| {
        let mut parts = Vec::new();
        let (mut start, mut quoted) = (0, false);
        for (at, c) in text.char_indices() {
            match c {
                '"' => quoted = !quoted,
                c if c == separator && !quoted => {
                    parts.push(&text[start..at]);
                    start = at + c.len_utf8();
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        parts.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(headers: &[&str]) -> Option<String> {
        negotiate(headers.iter().copied(), Sharing::Shared).map(|deflate| deflate.header())
    }

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn a_browser_offer_is_answered_without_context_in_shared_mode() {
        assert_eq!(shared(&["permessage-deflate; client_max_window_bits"]).as_deref(), Some(BOTH));
        assert_eq!(shared(&["permessage-deflate"]).as_deref(), Some(BOTH));
        assert_eq!(shared(&["PerMessage-Deflate ; Client_Max_Window_Bits"]).as_deref(), Some(BOTH));
    }

    #[test]
    fn context_mode_keeps_context_unless_asked() {
        let context = |offer: &str| negotiate([offer], Sharing::Context).map(|deflate| deflate.header());
        assert_eq!(context("permessage-deflate").as_deref(), Some("permessage-deflate"));
        assert_eq!(
            context("permessage-deflate; server_no_context_takeover").as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
    }

    #[test]
    fn the_first_offer_this_server_can_do_wins() {
        // 8 bits cannot be made: the next offer is taken.
        let offers = ["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10"];
        assert_eq!(
            shared(&offers).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
            )
        );
        assert_eq!(shared(&["x-webkit-deflate-frame", "permessage-deflate"]).as_deref(), Some(BOTH));
        assert_eq!(
            shared(&["permessage-deflate; server_max_window_bits=\"12\""]).map(|h| h.contains("=12")),
            Some(true)
        );
    }

    #[test]
    fn bad_offers_are_declined_not_fatal() {
        for offer in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=\"1\"2\"",
            "deflate-frame",
            "",
        ] {
            assert_eq!(shared(&[offer]), None, "{offer:?}");
        }
        assert_eq!(shared(&[]), None);
    }
}
