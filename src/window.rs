//! What to fetch: the half-open interval of a deal field (`Modified_Time` by default) that one run covers,
//! how the default nightly window follows the run ledger, what part of a window is settled, and how a window
//! is cut into adjacent parts (the fetcher's slices, a sharded backfill's tasks).

use std::fmt;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Utc};

pub use crate::config::spec::{WindowField, WindowSpec};

/// A half-open window `[start, end)` over one field. The offsets the user gave are kept, so that the criteria
/// carry them as given (Zoho compares instants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub field: WindowField,
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
}

impl Window {
    /// Builds a window, checking that it is not empty or reversed and that date windows are whole days.
    pub fn new(field: WindowField, start: DateTime<FixedOffset>, end: DateTime<FixedOffset>) -> Result<Window, String> {
        if start >= end {
            let at = |t: DateTime<FixedOffset>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
            return Err(format!("the window is empty: start {} is not before end {}", at(start), at(end)));
        }
        if field.is_date() && (start.time() != NaiveTime::MIN || end.time() != NaiveTime::MIN) {
            return Err(format!("{field} is a date field: give whole dates (YYYY-MM-DD) for --from and --to"));
        }
        Ok(Window { field, start, end })
    }

    /// The window's bound as Zoho criteria and COQL expect it: a date, or an ISO-8601 instant with its offset.
    pub fn format_bound(&self, t: &DateTime<FixedOffset>) -> String {
        if self.field.is_date() {
            t.date_naive().to_string()
        } else {
            t.to_rfc3339_opts(SecondsFormat::Secs, false)
        }
    }

    pub fn start_str(&self) -> String {
        self.format_bound(&self.start)
    }

    pub fn end_str(&self) -> String {
        self.format_bound(&self.end)
    }

    /// Cuts the window into `parts` adjacent pieces of (nearly) equal length, whole seconds or days. Fewer
    /// pieces when the window is too short; `None` when it cannot be cut at all.
    pub fn split_into(&self, parts: usize) -> Option<Vec<Window>> {
        let unit = if self.field.is_date() { Duration::days(1) } else { Duration::seconds(1) };
        let units = self.end.signed_duration_since(self.start).num_seconds() / unit.num_seconds();
        let parts = (parts as i64).min(units);
        if parts < 2 {
            return None;
        }
        let mut out = Vec::with_capacity(parts as usize);
        let mut start = self.start;
        for i in 1..=parts {
            let end = if i == parts { self.end } else { self.start + unit * (units * i / parts) as i32 };
            out.push(Window { field: self.field, start, end });
            start = end;
        }
        Some(out)
    }

    /// The part of a `Modified_Time` window settled at `now`, up to `now - index_lag` (Zoho's index lags fresh
    /// edits, and edits move deals in and out of an open window); `None` when none is. A `Closing_Date` window is
    /// returned whole: a deal may close in the future, and such windows are always proven by comparing ids.
    pub fn settled(&self, now: DateTime<Utc>, index_lag: Duration) -> Option<Window> {
        let limit = (now - index_lag).with_timezone(self.end.offset());
        if self.field.is_date() || self.end <= limit {
            return Some(self.clone());
        }
        Window::new(self.field, self.start, limit).ok()
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && t < self.end
    }

    /// Whether a deal with this modification time and closing date lies in the window (by its field).
    pub fn holds(&self, modified: DateTime<Utc>, closing: Option<NaiveDate>) -> bool {
        match self.field {
            WindowField::ModifiedTime => self.contains(modified),
            WindowField::ClosingDate => closing.is_some_and(|d| {
                d >= self.start.with_timezone(&Utc).date_naive() && d < self.end.with_timezone(&Utc).date_naive()
            }),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in [{}, {})", self.field, self.start_str(), self.end_str())
    }
}

/// Resolves the window at `now`. `last_good_end` is the end of the last successful scheduled run with the
/// same field, from the run ledger.
pub fn resolve(
    spec: &WindowSpec,
    field: WindowField,
    now: DateTime<Utc>,
    last_good_end: Option<DateTime<Utc>>,
) -> Result<Window, String> {
    match *spec {
        WindowSpec::Default { overlap, index_lag } => {
            let end = now - index_lag;
            // A ledger end after this end (a run with a shorter --index-lag) leaves only the overlap to read again.
            let from = last_good_end.unwrap_or(now - Duration::hours(24)).min(end);
            let start = if overlap > Duration::zero() { from - overlap } else { from.min(end - Duration::minutes(1)) };
            let (start, end) = if field.is_date() { (floor_day(start), ceil_day(end)) } else { (start, end) };
            Window::new(field, start.fixed_offset(), end.fixed_offset())
        }
        WindowSpec::Backfill { from, to, index_lag } => {
            let end = now - index_lag;
            let end = if field.is_date() { ceil_day(end) } else { end };
            Window::new(field, from, to.unwrap_or(end.fixed_offset()))
        }
    }
}

fn floor_day(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t.date_naive().and_time(NaiveTime::MIN))
}

/// The next midnight, or `t` itself when it is one.
fn ceil_day(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_day(t - Duration::nanoseconds(1)) + Duration::days(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modified_time_window_is_settled_up_to_now_minus_the_index_lag() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        let now = at("2026-12-07T12:00:00Z").with_timezone(&Utc);
        let lag = Duration::minutes(5);
        let w = Window::new(WindowField::ModifiedTime, at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")).unwrap();
        assert_eq!(w.settled(now, lag).unwrap().end, at("2026-12-07T11:55:00Z"));
        let past =
            Window::new(WindowField::ModifiedTime, at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(past.settled(now, lag).unwrap().end, past.end);
        let future =
            Window::new(WindowField::ModifiedTime, at("2026-12-08T00:00:00Z"), at("2027-01-01T00:00:00Z")).unwrap();
        assert!(future.settled(now, lag).is_none());
        let dates =
            Window::new(WindowField::ClosingDate, at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z")).unwrap();
        assert_eq!(dates.settled(now, lag).unwrap().end, dates.end);
    }

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn default_window_is_last_24h_plus_overlap_minus_lag() {
        let now = t("2026-11-28T12:00:00Z").with_timezone(&Utc);
        let spec = WindowSpec::Default { overlap: Duration::hours(1), index_lag: Duration::minutes(5) };
        let w = resolve(&spec, WindowField::ModifiedTime, now, None).unwrap();
        assert_eq!(w.start_str(), "2026-11-27T11:00:00+00:00");
        assert_eq!(w.end_str(), "2026-11-28T11:55:00+00:00");
    }

    #[test]
    fn default_window_catches_up_from_the_last_good_run() {
        let now = t("2026-11-28T12:00:00Z").with_timezone(&Utc);
        let last = t("2026-11-25T02:00:00Z").with_timezone(&Utc);
        let spec = WindowSpec::Default { overlap: Duration::hours(1), index_lag: Duration::minutes(5) };
        let w = resolve(&spec, WindowField::ModifiedTime, now, Some(last)).unwrap();
        assert_eq!(w.start_str(), "2026-11-25T01:00:00+00:00");
    }

    #[test]
    fn a_ledger_end_after_the_window_end_leaves_only_the_overlap() {
        // The last run had --index-lag 0s and ended a minute ago; this one ends five minutes ago.
        let now = t("2026-11-28T12:00:00Z").with_timezone(&Utc);
        let last = t("2026-11-28T11:59:00Z").with_timezone(&Utc);
        let spec = WindowSpec::Default { overlap: Duration::hours(1), index_lag: Duration::minutes(5) };
        let w = resolve(&spec, WindowField::ModifiedTime, now, Some(last)).unwrap();
        assert_eq!(
            (w.start_str().as_str(), w.end_str().as_str()),
            ("2026-11-28T10:55:00+00:00", "2026-11-28T11:55:00+00:00")
        );
        let spec = WindowSpec::Default { overlap: Duration::zero(), index_lag: Duration::minutes(5) };
        let w = resolve(&spec, WindowField::ModifiedTime, now, Some(last)).unwrap();
        assert!(w.start < w.end, "never an empty window");
    }

    #[test]
    fn date_windows_are_whole_days() {
        let w = Window::new(WindowField::ClosingDate, t("2026-01-01T00:00:00Z"), t("2026-01-01T10:00:00Z"));
        assert!(w.is_err());
        let w = Window::new(WindowField::ClosingDate, t("2026-01-01T00:00:00Z"), t("2026-01-04T00:00:00Z")).unwrap();
        assert_eq!(w.start_str(), "2026-01-01");
        let (a, b) = halves(&w).unwrap();
        assert_eq!((a.end_str().as_str(), b.start_str().as_str()), ("2026-01-02", "2026-01-02"));
        let one = Window::new(WindowField::ClosingDate, t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")).unwrap();
        assert!(halves(&one).is_none());
    }

    fn halves(w: &Window) -> Option<(Window, Window)> {
        let [a, b]: [Window; 2] = w.split_into(2)?.try_into().ok()?;
        Some((a, b))
    }

    #[test]
    fn splitting_keeps_the_halves_adjacent_and_stops_at_one_second() {
        let w = Window::new(WindowField::ModifiedTime, t("2026-01-01T00:00:00+05:30"), t("2026-01-01T00:00:03+05:30"))
            .unwrap();
        let (a, b) = halves(&w).unwrap();
        assert_eq!(a.start, w.start);
        assert_eq!(a.end, b.start);
        assert_eq!(b.end, w.end);
        assert_eq!(a.end_str(), "2026-01-01T00:00:01+05:30");
        assert!(halves(&a).is_none(), "a one-second window cannot be halved");
        assert!(halves(&b).is_some());
    }

    #[test]
    fn splitting_into_parts_covers_the_window_without_gaps() {
        let w = Window::new(WindowField::ModifiedTime, t("2026-01-01T00:00:00Z"), t("2026-01-01T00:01:40Z")).unwrap();
        let parts = w.split_into(7).unwrap();
        assert_eq!(parts.len(), 7);
        assert_eq!(parts[0].start, w.start);
        assert_eq!(parts[6].end, w.end);
        assert!(parts.windows(2).all(|p| p[0].end == p[1].start && p[0].start < p[0].end));
        let tiny =
            Window::new(WindowField::ModifiedTime, t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:03Z")).unwrap();
        assert_eq!(tiny.split_into(10).unwrap().len(), 3);
        let one = Window::new(WindowField::ClosingDate, t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")).unwrap();
        assert!(one.split_into(4).is_none());
    }
}
