//! Reading a task's RFC 3339 timestamps.
//!
//! Every task the consumer reads carries one (`timestamp`) and a retry one more
//! (`not_before`), and chrono's general parser (which also takes spaces, lower case, years
//! past 9999 and more) was a tenth of the consumer's work per task. The two forms producers
//! actually write, ours (`2026-12-03T19:13:46.123456789Z`) and Go's `encoding/json`
//! (`2026-12-03T19:13:46.123456789+08:00`), are read here directly; anything else goes to
//! chrono, so what is accepted, what it means and what an error says stay chrono's.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeDelta, Utc};
use serde::de::{self, Deserializer, Visitor};

/// Parses `text` as chrono's `DateTime<FixedOffset>` parser does, in UTC.
///
/// # Errors
///
/// chrono's [`ParseError`](chrono::ParseError), for text that is not a date and time.
pub(crate) fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_common(text.as_bytes()) {
        Some(utc) => Ok(utc),
        None => text.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` with at most nine digits of fraction;
/// `None` for anything else, which chrono then reads (or refuses) as it always did.
fn parse_common(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let date = NaiveDate::from_ymd_opt(year as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    // A leap second (`:60`) is left to chrono.
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let [b'.', fraction @ ..] = rest {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&fraction[..n])? * 10u32.pow(9 - n as u32);
        rest = &fraction[n..];
    }
    let offset_secs = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i64;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let local = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    local.checked_sub_signed(TimeDelta::seconds(offset_secs)).map(|t| t.and_utc())
}

/// The value of ASCII decimal digits; `None` if one is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// `deserialize_with` for a timestamp.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(TimestampVisitor)
}

/// `deserialize_with` for an optional timestamp (`null` or absent: none).
pub(super) fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 formatted date and time string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(OptionVisitor)
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = DateTime<Utc>;
    // chrono's words, so that a refused task's error reads as before.
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 formatted date and time string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono(text: &str) -> Result<DateTime<Utc>, String> {
        text.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)).map_err(|e| e.to_string())
    }

    fn ours(text: &str) -> Result<DateTime<Utc>, String> {
        parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_forms_producers_write_are_read_directly_and_as_chrono_reads_them() {
        for text in [
            "2026-12-03T19:13:46Z",
            "2026-12-03T19:13:46.1Z",
            "2026-12-03T19:13:46.123456789Z",
            "2026-12-03T19:13:46.000000001+08:00",
            "2024-05-01T10:00:00.123456789+08:00",
            "2024-02-29T23:59:59.5-05:30",
            "0001-01-01T00:00:00Z",
            "0000-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59.999999999-23:59",
        ] {
            assert!(parse_common(text.as_bytes()).is_some(), "{text} took the slow path");
            assert_eq!(ours(text), chrono(text), "{text}");
        }
    }

    #[test]
    fn everything_else_is_chrono_s_to_accept_or_refuse() {
        for text in [
            "2026-12-03 19:13:46Z",
            "2026-12-03t19:13:46z",
            "2026-12-03T19:13:46+0800",
            "2026-12-03T19:13:46.1234567891Z",
            "2026-12-03T19:13:60Z",
            "2016-12-31T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T19:13:46+24:00",
            "2026-12-03T19:13:46.Z",
            "2026-12-03T19:13:46",
            "+12026-12-03T19:13:46Z",
            "2026-12-03T19:13:46Zjunk",
            "２026-12-03T19:13:46Z",
            "",
            "now",
        ] {
            assert_eq!(ours(text), chrono(text), "{text}");
        }
    }

    #[test]
    fn any_mangling_of_a_timestamp_reads_as_chrono_reads_it() {
        // Every one-byte change of the two common forms, at every position.
        let alphabet = b"0123456789-+:.TZtz \x00\xff";
        for base in ["2026-12-03T19:13:46.123456789Z", "2024-05-01T10:00:00.5+08:00"] {
            for at in 0..base.len() {
                for &c in alphabet {
                    let mut bytes = base.as_bytes().to_vec();
                    bytes[at] = c;
                    let Ok(text) = String::from_utf8(bytes) else { continue };
                    assert_eq!(ours(&text), chrono(&text), "{text:?}");
                }
                let (cut, _) = base.split_at(at);
                assert_eq!(ours(cut), chrono(cut), "{cut:?}");
            }
        }
    }
}
