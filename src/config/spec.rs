//! What the user asked for, as values: which field selects deals, how the window is chosen (the nightly default
//! or a backfill), where rows go. Parsed once from flags, the environment or the file; `window` resolves them.

use std::fmt;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowField {
    ModifiedTime,
    ClosingDate,
}

impl WindowField {
    pub fn api_name(self) -> &'static str {
        match self {
            WindowField::ModifiedTime => "Modified_Time",
            WindowField::ClosingDate => "Closing_Date",
        }
    }

    pub fn parse(s: &str) -> Result<WindowField, String> {
        match s {
            "Modified_Time" | "modified_time" => Ok(WindowField::ModifiedTime),
            "Closing_Date" | "closing_date" => Ok(WindowField::ClosingDate),
            _ => Err(format!("`{s}` is not a window field; use Modified_Time or Closing_Date")),
        }
    }

    /// `Closing_Date` is a DATE field: its windows are whole days.
    pub fn is_date(self) -> bool {
        matches!(self, WindowField::ClosingDate)
    }
}

impl fmt::Display for WindowField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSpec {
    /// The nightly default: from the last good scheduled run's end (or 24 h ago), minus `overlap`, up to
    /// `now - index_lag`.
    Default { overlap: Duration, index_lag: Duration },
    /// An explicit backfill `[from, to)`; `to` defaults to `now - index_lag`.
    Backfill { from: DateTime<FixedOffset>, to: Option<DateTime<FixedOffset>>, index_lag: Duration },
}

impl WindowSpec {
    pub fn is_backfill(&self) -> bool {
        matches!(self, WindowSpec::Backfill { .. })
    }
}

/// Parses a `--from`/`--to` bound: a date (`2026-01-01`, midnight UTC) or an RFC 3339 instant with an offset.
pub fn parse_bound(s: &str) -> Result<DateTime<FixedOffset>, String> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(NaiveTime::MIN).and_utc().fixed_offset());
    }
    DateTime::parse_from_rfc3339(s).map_err(|_| {
        format!("`{s}` is neither a date (2026-01-31) nor an RFC 3339 instant (2026-01-31T00:00:00+05:30)")
    })
}

/// Parses a duration such as `500ms`, `90s`, `15m`, `1h`, `2d` or `0` (humantime's units).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d =
        humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 90s, 15m, 1h or 2d ({e})"))?;
    // Window arithmetic on instants must not overflow: no setting needs more than a century.
    match Duration::from_std(d) {
        Ok(d) if d <= Duration::days(36_525) => Ok(d),
        _ => Err(format!("`{s}` is too long (at most 100 years)")),
    }
}

/// A sink as named on the command line or in the file: `NAME` or `NAME:TARGET` (`sqlite:./deals.db`,
/// `ndjson:-`, `bigquery`). Only the form is checked here: which names exist and what their target means belong
/// to `sink::Target::resolve`, so that a new sink is added in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    pub name: String,
    /// The text after the first `:`, if any.
    pub target: Option<String>,
}

impl SinkSpec {
    pub fn parse(s: &str) -> Result<SinkSpec, String> {
        let (name, target) = s.split_once(':').map_or((s, None), |(name, target)| (name, Some(target)));
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(format!("`{s}` is not a sink: expected NAME or NAME:TARGET, such as sqlite:PATH or bigquery"));
        }
        Ok(SinkSpec { name: name.into(), target: target.map(String::from) })
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        self.target.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn bounds_accept_dates_and_offsets() {
        assert_eq!(parse_bound("2026-01-01").unwrap(), t("2026-01-01T00:00:00Z"));
        assert_eq!(parse_bound("2026-01-01T00:00:00+05:30").unwrap().offset().local_minus_utc(), 19800);
        assert!(parse_bound("01/02/2026").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::seconds(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::hours(1));
        assert_eq!(parse_duration("0").unwrap(), Duration::zero());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::milliseconds(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::days(2));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::minutes(90));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("10").is_err(), "a number without a unit is ambiguous");
    }

    #[test]
    fn sink_specs_are_a_name_and_the_text_after_the_first_colon() {
        let spec = |name: &str, target: Option<&str>| SinkSpec { name: name.into(), target: target.map(String::from) };
        assert_eq!(SinkSpec::parse("sqlite:/tmp/a:b.db").unwrap(), spec("sqlite", Some("/tmp/a:b.db")));
        assert_eq!(SinkSpec::parse("ndjson:-").unwrap().to_string(), "ndjson:-");
        assert_eq!(SinkSpec::parse("bigquery").unwrap(), spec("bigquery", None));
        for bad in ["", ":x", "Post gres:x", "../x.db"] {
            assert!(SinkSpec::parse(bad).unwrap_err().contains("is not a sink"), "{bad}");
        }
    }
}
