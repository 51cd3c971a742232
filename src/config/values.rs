//! How setting values are read: strictly typed, whichever source they come
//! from. A TOML file gives typed values; the environment gives strings. So
//! numbers, booleans, durations and sizes accept their own TOML type or a
//! string that spells exactly one value, and nothing else: `1.5` is not a
//! count, `"yes"` is not a boolean. Errors say what was expected.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An unsigned integer type a setting can have.
pub trait Count: TryFrom<u64> + Copy {
    const MAX: u64;
}

impl Count for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Count for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Count for usize {
    const MAX: u64 = usize::MAX as u64;
}

/// `#[serde(deserialize_with = "values::count")]`: a whole number in the
/// type's range, from an integer or a string of digits.
pub fn count<'de, D: Deserializer<'de>, T: Count>(deserializer: D) -> Result<T, D::Error> {
    struct CountVisitor<T>(PhantomData<T>);

    impl<T: Count> Visitor<'_> for CountVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a whole number from 0 to {}", T::MAX)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
            T::try_from(value).ok().filter(|_| value <= T::MAX).ok_or_else(|| {
                E::custom(format_args!("{value} is out of range: expected a whole number from 0 to {}", T::MAX))
            })
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
            match u64::try_from(value) {
                Ok(value) => self.visit_u64(value),
                Err(_) => {
                    Err(E::custom(format_args!("{value} is negative: expected a whole number from 0 to {}", T::MAX)))
                }
            }
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            let digits = text.trim();
            match digits.parse::<u64>() {
                Ok(value) if !digits.starts_with('+') => self.visit_u64(value),
                _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
            }
        }
    }

    deserializer.deserialize_any(CountVisitor(PhantomData))
}

/// `#[serde(deserialize_with = "values::boolean")]`: `true` or `false`, as a
/// TOML boolean or that exact string.
pub fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct BoolVisitor;

    impl Visitor<'_> for BoolVisitor {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true or false")
        }

        fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<bool, E> {
            match text.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
            }
        }
    }

    deserializer.deserialize_any(BoolVisitor)
}

/// `#[serde(with = "values::duration")]`: a humantime string such as
/// `"500ms"` or `"1s 500ms"`.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"5s\", \"500ms\" or \"1m 30s\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                humantime::parse_duration(text.trim()).map_err(|problem| {
                    E::custom(format_args!(
                        "{text:?} is not a duration such as \"5s\", \"500ms\" or \"1m 30s\" ({problem})"
                    ))
                })
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A size in bytes: a number of bytes, or a string such as `"4MiB"`,
/// `"512KiB"`, `"1GiB"` (binary units; `B` for plain bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let unit = unit.trim();
        let multiplier = match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, multiplier)) => *multiplier,
            None if unit.is_empty() => 1,
            None => return Err(format!("{text:?}: the unit must be B, KiB, MiB or GiB")),
        };
        let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as \"4MiB\" or 65536"))?;
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNITS.iter().find(|(_, multiplier)| self.0 >= *multiplier && self.0.is_multiple_of(*multiplier)) {
            Some((name, multiplier)) if *multiplier > 1 => write!(f, "{}{name}", self.0 / multiplier),
            _ => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 >= 1024 && self.to_string().ends_with('B') {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"4MiB\", \"512KiB\", \"1GiB\"")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value).map(ByteSize).map_err(|_| E::custom(format_args!("{value} is negative")))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                ByteSize::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(deserialize_with = "count", default)]
        port: u16,
        #[serde(deserialize_with = "boolean", default)]
        flag: bool,
        #[serde(with = "duration", default)]
        wait: Duration,
        #[serde(default = "zero")]
        size: ByteSize,
    }

    fn zero() -> ByteSize {
        ByteSize(0)
    }

    fn probe(value: serde_json::Value) -> Result<Probe, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn counts_are_whole_numbers_in_range() {
        assert_eq!(probe(json!({"port": 8080})).unwrap().port, 8080);
        assert_eq!(probe(json!({"port": "9000"})).unwrap().port, 9000);
        for bad in [json!(1.5), json!(-1), json!(70000), json!("eighty"), json!("1.5"), json!("+5"), json!(true)] {
            let err = probe(json!({ "port": bad.clone() })).expect_err("refused");
            assert!(err.contains("0 to 65535"), "{bad}: {err}");
        }
    }

    #[test]
    fn booleans_are_true_or_false() {
        assert!(probe(json!({"flag": true})).unwrap().flag);
        assert!(!probe(json!({"flag": "false"})).unwrap().flag);
        for bad in [json!("yes"), json!(1), json!("on"), json!("True ")] {
            let err = probe(json!({ "flag": bad.clone() })).expect_err("refused");
            assert!(err.contains("true or false"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_say_their_form() {
        assert_eq!(probe(json!({"wait": "1s 500ms"})).unwrap().wait, Duration::from_millis(1500));
        for bad in [json!(5), json!("5"), json!("5 parsecs")] {
            let err = probe(json!({ "wait": bad.clone() })).expect_err("refused");
            assert!(err.contains("\"5s\""), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [("4MiB", 4 << 20), ("512 KiB", 512 << 10), ("1GiB", 1 << 30), ("100", 100), ("7B", 7)] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        assert_eq!(probe(json!({"size": 65536})).unwrap().size, ByteSize(65536));
        for bad in ["4MB", "4 megabytes", "-1", "1.5MiB", "", "99999999999GiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert!(probe(json!({"size": 1.5})).is_err());
        assert_eq!(ByteSize::mib(4).to_string(), "4MiB");
        assert_eq!(ByteSize(1536).to_string(), "1536");
        assert_eq!(ByteSize(1024 * 1536).to_string(), "1536KiB");
        assert_eq!(serde_json::to_value(ByteSize::mib(1)).unwrap(), json!("1MiB"));
        assert_eq!(serde_json::to_value(ByteSize(100)).unwrap(), json!(100));
    }
}
