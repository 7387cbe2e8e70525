//! How values are written as text, the same way in every sink: instants as fixed-width RFC 3339 UTC (so that the
//! text sorts like the instant and SQLite can range-scan it), dates as `YYYY-MM-DD`, decimals in their shortest
//! exact form; and how deal ids are ordered.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

/// BigQuery NUMERIC keeps 9 digits after the point; more would be silently rounded there, so they are refused.
pub const MAX_SCALE: u32 = 9;

/// A row's text: inline up to 24 bytes (a Zoho id, a stage, a currency, most names and e-mail addresses), so
/// that mapping a deal does not allocate a dozen small strings that are freed again once the row is written.
pub type Text = compact_str::CompactString;

/// Instants are written the same way everywhere: RFC 3339, UTC, whole seconds (Zoho's precision). The fixed
/// width makes the text sort like the instant, so SQLite can index and range-scan it.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    instant_text(t).as_str().to_string()
}

/// A short text (an instant, a date, a decimal) formatted on the stack: every row has half a dozen of them, and
/// a `String` each, through chrono's format interpreter, was a few per cent of a sync's CPU.
#[derive(Clone, Copy)]
pub struct Short {
    buf: [u8; Short::CAPACITY],
    len: u8,
}

impl Short {
    /// Enough for any `Decimal` (28 digits, a sign and a point) and any chrono instant or date.
    const CAPACITY: usize = 48;

    fn new() -> Short {
        Short { buf: [0; Short::CAPACITY], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).expect("only text is written")
    }

    fn push(&mut self, bytes: &[u8]) -> fmt::Result {
        let end = self.len as usize + bytes.len();
        self.buf.get_mut(self.len as usize..end).ok_or(fmt::Error)?.copy_from_slice(bytes);
        self.len = end as u8;
        Ok(())
    }

    /// `n` as exactly `width` digits (`n` < 10^width).
    fn digits(&mut self, n: u32, width: usize) {
        let mut d = [0u8; 4];
        let mut n = n;
        for k in (0..width).rev() {
            d[k] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.push(&d[..width]).expect("fits");
    }

    /// `YYYY-MM-DD`, the part every form here starts with; false (nothing written) for years chrono writes with
    /// a sign or more digits.
    fn ymd(&mut self, d: NaiveDate) -> bool {
        use chrono::Datelike;
        if !(0..=9999).contains(&d.year()) {
            return false;
        }
        self.digits(d.year() as u32, 4);
        self.push(b"-").expect("fits");
        self.digits(d.month(), 2);
        self.push(b"-").expect("fits");
        self.digits(d.day(), 2);
        true
    }

    fn display(v: impl fmt::Display) -> Short {
        let mut s = Short::new();
        fmt::write(&mut s, format_args!("{v}")).expect("short values fit");
        s
    }
}

impl fmt::Write for Short {
    fn write_str(&mut self, t: &str) -> fmt::Result {
        self.push(t.as_bytes())
    }
}

impl fmt::Debug for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Short {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `format_instant`'s text, without the heap: the fixed-width form is written directly, anything chrono writes
/// differently (a year outside 0–9999, a leap second) by chrono.
pub fn instant_text(t: &DateTime<Utc>) -> Short {
    use chrono::Timelike;
    let mut s = Short::new();
    if t.nanosecond() < 1_000_000_000 && s.ymd(t.date_naive()) {
        s.push(b"T").expect("fits");
        s.digits(t.hour(), 2);
        s.push(b":").expect("fits");
        s.digits(t.minute(), 2);
        s.push(b":").expect("fits");
        s.digits(t.second(), 2);
        s.push(b"Z").expect("fits");
        return s;
    }
    Short::display(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// A date as `YYYY-MM-DD` (chrono's `%Y-%m-%d`).
pub fn date_text(d: NaiveDate) -> Short {
    let mut s = Short::new();
    if s.ymd(d) {
        return s;
    }
    Short::display(d.format("%Y-%m-%d"))
}

/// A decimal in its shortest exact form (normalized: no trailing zeros after the point), as rust_decimal's
/// `Display` writes it. Written from the digits of its mantissa and its scale: through `Display` (a formatter,
/// padding, a second buffer) a decimal took about 740 instructions, and every row has three.
pub fn decimal_text(d: &Decimal) -> Short {
    let d = d.normalize();
    let mut s = Short::new();
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(d.mantissa().unsigned_abs()).as_bytes();
    let scale = d.scale() as usize;
    if d.is_sign_negative() && !d.is_zero() {
        s.push(b"-").expect("fits");
    }
    if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        s.push(whole).expect("fits");
        if scale > 0 {
            s.push(b".").expect("fits");
            s.push(fraction).expect("fits");
        }
    } else {
        s.push(b"0.").expect("fits");
        for _ in digits.len()..scale {
            s.push(b"0").expect("fits");
        }
        s.push(digits).expect("fits");
    }
    s
}

/// Sorts numeric ids by value (shorter first), others as text, so that a warehouse's and Zoho's lists sort alike.
pub fn sort_ids(ids: &mut [String]) {
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    // Arbitrary decimals are checked against rust_decimal's `Display` by mapping's property test of short texts.
    #[test]
    fn decimals_of_every_shape_are_written_shortest_and_exact() {
        for (text, want) in [
            ("0", "0"),
            ("-0.000", "0"),
            ("12345678901.25", "12345678901.25"),
            ("52000.00", "52000"),
            ("-0.0025", "-0.0025"),
            ("0.1", "0.1"),
            ("-7", "-7"),
            ("79228162514264337593543950335", "79228162514264337593543950335"),
            ("-0.0000000000000000000000000001", "-0.0000000000000000000000000001"),
        ] {
            let d: Decimal = text.parse().unwrap();
            assert_eq!(decimal_text(&d).as_str(), want, "{text}");
        }
    }
}
