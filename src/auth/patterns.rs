//! Room-name patterns: `auth.private_rooms` and the `rooms` and `read`
//! claims. A pattern is a room name in which `*` matches any run of
//! characters, the empty run included: `private:*`, `team-*-ops`, `*`.

use std::fmt;

/// The longest pattern: a room name is at most 64 bytes, and `*` may stand
/// for a run of them.
const MAX_PATTERN_BYTES: usize = 128;

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Box<str>);

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() || text.len() > MAX_PATTERN_BYTES {
            return Err(format!("{}: a pattern is 1 to {MAX_PATTERN_BYTES} bytes", super::shown(text)));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'*');
        if !text.bytes().all(allowed) {
            return Err(format!("{}: a pattern uses only A-Z a-z 0-9 - _ . : and *", super::shown(text)));
        }
        Ok(Pattern(text.into()))
    }

    /// Whether `name` matches: `*` stands for any run of bytes.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }

    /// Whether some room name matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        // seen[i][j]: a[i..] and b[j..] were found to share no name.
        let mut seen = vec![vec![false; b.len() + 1]; a.len() + 1];
        intersect(a, b, 0, 0, &mut seen)
    }
}

/// Whether `a[i..]` and `b[j..]` match a common name (depth-first over the
/// pairs of positions, each tried once: at most 129 x 129).
fn intersect(a: &[u8], b: &[u8], i: usize, j: usize, seen: &mut Vec<Vec<bool>>) -> bool {
    if seen[i][j] {
        return false;
    }
    seen[i][j] = true;
    match (a.get(i), b.get(j)) {
        (None, None) => true,
        // A star takes nothing, or takes what the other side has next.
        (Some(b'*'), _) if intersect(a, b, i + 1, j, seen) => true,
        (_, Some(b'*')) if intersect(a, b, i, j + 1, seen) => true,
        (Some(b'*'), Some(_)) => intersect(a, b, i, j + 1, seen),
        (Some(_), Some(b'*')) => intersect(a, b, i + 1, j, seen),
        (Some(x), Some(y)) => x == y && intersect(a, b, i + 1, j + 1, seen),
        _ => false,
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Iterative wildcard match: on a mismatch, the last `*` takes one more
/// byte. Linear in practice, O(n·m) at worst, with n, m <= 128.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A list of patterns; matches when any does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Box<[Pattern]>);

impl Patterns {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Patterns, String> {
        let parsed: Result<Vec<Pattern>, String> = items.iter().map(|item| Pattern::parse(item.as_ref())).collect();
        Ok(Patterns(parsed?.into_boxed_slice()))
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some room name matches `pattern` and one of these.
    pub fn overlaps(&self, pattern: &Pattern) -> bool {
        self.0.iter().any(|own| own.overlaps(pattern))
    }

    /// Bytes held, for the memory bound.
    pub fn bytes(&self) -> usize {
        self.0.iter().map(|pattern| pattern.0.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(name)
    }

    fn overlap(a: &str, b: &str) -> bool {
        let (a, b) = (Pattern::parse(a).unwrap(), Pattern::parse(b).unwrap());
        assert_eq!(a.overlaps(&b), b.overlaps(&a), "symmetric");
        a.overlaps(&b)
    }

    #[test]
    fn patterns_overlap_when_a_name_matches_both() {
        assert!(overlap("feed:*", "feed:*"));
        assert!(overlap("feed:*", "*:live"), "feed:live");
        assert!(overlap("feed:*", "feed:live:*"));
        assert!(overlap("*", "team-red"));
        assert!(overlap("team-*-ops", "team-red-*"));
        assert!(!overlap("feed:*", "private:*"));
        assert!(!overlap("feed:*", "team-*"));
        assert!(!overlap("a*b", "c*"));
        assert!(!overlap("team-red", "team-blue"));
        assert!(overlap(&"*a".repeat(60), &"a*".repeat(60)), "long patterns end in time");
    }

    #[test]
    fn stars_match_any_run() {
        assert!(matches("private:*", "private:a"));
        assert!(matches("private:*", "private:"));
        assert!(!matches("private:*", "privat:a"));
        assert!(matches("team-*-ops", "team-red-ops"));
        assert!(matches("team-*-ops", "team--ops"));
        assert!(!matches("team-*-ops", "team-red-opsx"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "aXXbYYbc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("lobby", "lobby"));
        assert!(!matches("lobby", "lobby2"));
        assert!(matches("**x", "x"));
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a b").unwrap_err().contains("\"a b\""));
        assert!(Pattern::parse("room/1").is_err());
        assert!(Pattern::parse(&"x".repeat(129)).is_err());
        assert!(Patterns::parse(&["ok", "not ok"]).is_err());
        assert!(Patterns::parse::<&str>(&[]).unwrap().is_empty());
    }
}
