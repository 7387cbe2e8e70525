//! Turns one Deal record, as Zoho sent it, into a typed warehouse row, or says exactly why it cannot.
//!
//! Every field is read from its raw JSON text, so that money is parsed as an exact decimal straight from the
//! digits Zoho sent (never through a float), and a record with a bad field is quarantined with the field's name
//! and the problem instead of failing the run or being dropped. The record itself is kept verbatim in `raw`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

use crate::json::{self, Field, Raw};
use crate::zoho::criteria::CLOSED_WON;
use crate::zoho::{Page, Record};

pub mod promoted;

use promoted::{Extras, Promoted};

/// BigQuery NUMERIC keeps 9 digits after the point; more would be silently rounded there, so they are refused.
pub const MAX_SCALE: u32 = 9;

/// A row's text: inline up to 24 bytes (a Zoho id, a stage, a currency, most names and e-mail addresses), so
/// that mapping a deal does not allocate a dozen small strings that are freed again once the row is written.
pub type Text = compact_str::CompactString;

/// One closed-won deal, ready for any sink.
#[derive(Debug, Clone, Serialize)]
pub struct DealRow {
    pub deal_id: Text,
    pub deal_name: Option<Text>,
    pub stage: Text,
    #[serde(serialize_with = "opt_decimal")]
    pub amount: Option<Decimal>,
    #[serde(serialize_with = "opt_decimal")]
    pub expected_revenue: Option<Decimal>,
    #[serde(serialize_with = "opt_decimal")]
    pub exchange_rate: Option<Decimal>,
    pub currency: Option<Text>,
    pub probability: Option<i64>,
    pub closing_date: Option<NaiveDate>,
    pub account_id: Option<Text>,
    pub account_name: Option<Text>,
    pub contact_id: Option<Text>,
    pub contact_name: Option<Text>,
    pub owner_id: Option<Text>,
    pub owner_name: Option<Text>,
    pub owner_email: Option<Text>,
    pub pipeline: Option<Text>,
    #[serde(rename = "type")]
    pub deal_type: Option<Text>,
    pub lead_source: Option<Text>,
    pub tags: Vec<Text>,
    #[serde(serialize_with = "opt_instant")]
    pub created_time: Option<DateTime<Utc>>,
    #[serde(serialize_with = "instant")]
    pub modified_time: DateTime<Utc>,
    /// Not serialized with the row: serde cannot embed JSON text without checking it once more, so a sink that
    /// writes rows as JSON appends it itself (`write_json_line`).
    #[serde(skip)]
    pub raw: Raw,
    pub sync_run_id: Arc<str>,
    #[serde(serialize_with = "instant")]
    pub synced_at: DateTime<Utc>,
    /// False once the deal left "Closed Won" in the CRM (reopened or lost).
    pub is_closed_won: bool,
    /// True once the deal was deleted in the CRM (a soft delete: the row stays).
    pub is_deleted: bool,
    #[serde(serialize_with = "opt_instant")]
    pub deleted_time: Option<DateTime<Utc>>,
    /// Promoted fields (config `[columns]`), after the standard columns.
    #[serde(flatten)]
    pub extras: Extras,
}

impl DealRow {
    /// Appends the row as one line of JSON: every column, `raw` last and verbatim.
    pub fn write_json_line(&self, buf: &mut Vec<u8>) {
        serde_json::to_writer(&mut *buf, self).expect("rows serialize");
        debug_assert_eq!(buf.last(), Some(&b'}'));
        buf.pop();
        buf.extend_from_slice(b",\"raw\":");
        buf.extend_from_slice(self.raw.get().as_bytes());
        buf.extend_from_slice(b"}\n");
    }
}

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

/// A decimal in its shortest exact form (normalized: no trailing zeros after the point).
pub fn decimal_text(d: &Decimal) -> Short {
    Short::display(d.normalize())
}

fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    instant_text(t).serialize(s)
}

fn opt_instant<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => instant(t, s),
        None => s.serialize_none(),
    }
}

/// Decimals travel as strings so that no JSON reader turns them into floats.
fn opt_decimal<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => decimal_text(d).serialize(s),
        None => s.serialize_none(),
    }
}

/// A record that could not be turned into a row, with the reason, kept for an operator to look at.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub deal_id: Option<String>,
    pub reason: String,
    pub raw: Raw,
    pub sync_run_id: String,
    #[serde(serialize_with = "instant")]
    pub quarantined_at: DateTime<Utc>,
}

/// What became of one record.
#[derive(Debug)]
pub enum Mapped {
    Row(Box<DealRow>),
    /// Zoho's `equals` matched a stage that merely contains "Closed Won"; not ours.
    NotClosedWon { deal_id: Option<Text>, stage: Option<Text> },
    Quarantined(Box<Quarantined>),
}

/// Run-wide values stamped on every row.
#[derive(Debug, Clone)]
pub struct RunStamp {
    /// Shared by every row of the run (each row holds it without a copy).
    pub run_id: Arc<str>,
    pub synced_at: DateTime<Utc>,
    /// Fields promoted to their own columns by the config file.
    pub promoted: &'static [Promoted],
}

/// Why one field could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Which standard field a key names: an index into `STANDARD_FIELDS`, found through a table built at compile
/// time (a record has about 60 keys and only 18 are read, so a key that is not ours must cost almost nothing).
fn standard_slot(key: &[u8]) -> Option<usize> {
    const fn bucket(b: &[u8]) -> usize {
        (b.len() * 5 + b[0] as usize + ((b[1] as usize) << 2)) & 63
    }
    const TABLE: [u8; 64] = {
        let mut t = [u8::MAX; 64];
        let mut i = 0;
        while i < STANDARD_FIELDS.len() {
            let k = bucket(STANDARD_FIELDS[i].0.as_bytes());
            assert!(t[k] == u8::MAX, "two standard fields share a bucket: change `bucket`");
            t[k] = i as u8;
            i += 1;
        }
        t
    };
    if key.len() < 2 {
        return None;
    }
    let i = TABLE[bucket(key)] as usize;
    (i < STANDARD_FIELDS.len() && STANDARD_FIELDS[i].0.as_bytes() == key).then_some(i)
}

/// Slots of `STANDARD_FIELDS`, each found by its field's name when the crate is built (a name that is not a
/// standard field fails the build), so the two lists cannot drift apart.
mod slot {
    use super::STANDARD_FIELDS;

    const fn of(name: &str) -> usize {
        let mut i = 0;
        while i < STANDARD_FIELDS.len() {
            let (a, b) = (STANDARD_FIELDS[i].0.as_bytes(), name.as_bytes());
            if a.len() == b.len() {
                let mut j = 0;
                while j < a.len() && a[j] == b[j] {
                    j += 1;
                }
                if j == a.len() {
                    return i;
                }
            }
            i += 1;
        }
        panic!("not a standard field")
    }

    pub const ID: usize = of("id");
    pub const DEAL_NAME: usize = of("Deal_Name");
    pub const STAGE: usize = of("Stage");
    pub const AMOUNT: usize = of("Amount");
    pub const EXPECTED_REVENUE: usize = of("Expected_Revenue");
    pub const EXCHANGE_RATE: usize = of("Exchange_Rate");
    pub const CURRENCY: usize = of("Currency");
    pub const PROBABILITY: usize = of("Probability");
    pub const CLOSING_DATE: usize = of("Closing_Date");
    pub const ACCOUNT: usize = of("Account_Name");
    pub const CONTACT: usize = of("Contact_Name");
    pub const OWNER: usize = of("Owner");
    pub const PIPELINE: usize = of("Pipeline");
    pub const TYPE: usize = of("Type");
    pub const LEAD_SOURCE: usize = of("Lead_Source");
    pub const TAG: usize = of("Tag");
    pub const CREATED_TIME: usize = of("Created_Time");
    pub const MODIFIED_TIME: usize = of("Modified_Time");
    pub const COUNT: usize = STANDARD_FIELDS.len();
}

/// The fields we type, as found in the page; everything else stays only in `raw`.
struct DealWire<'a> {
    standard: [Option<Field<'a>>; slot::COUNT],
    /// One slot per promoted field, in the configuration's order.
    extras: Vec<Option<&'a str>>,
}

/// Picks the standard and promoted fields out of a record's top-level fields. A repeated standard key is an
/// error (which copy would be right?).
fn wire<'a>(rec: &Record<'a>, promoted: &[Promoted]) -> Result<DealWire<'a>, String> {
    let mut w = DealWire { standard: [None; slot::COUNT], extras: vec![None; promoted.len()] };
    for f in rec.fields() {
        // Standard names have no backslash: a key matches one as written, or is escaped and is looked up by name.
        let key = f.key_bytes();
        let slot = standard_slot(key).or_else(|| key.contains(&b'\\').then(|| standard_slot(f.name().as_bytes())).flatten());
        if let Some(i) = slot {
            if w.standard[i].replace(f).is_some() {
                return Err(format!("record: duplicate field `{}`", STANDARD_FIELDS[i].0));
            }
        }
        if promoted.is_empty() {
            continue;
        }
        // A field may be promoted whether or not it is standard (e.g. a lookup's name), even twice.
        for (i, p) in promoted.iter().enumerate() {
            if f.is(p.field) {
                w.extras[i] = Some(f.value());
            }
        }
    }
    Ok(w)
}

/// Maps one record of a page. Never panics, whatever the input.
pub fn map_record(rec: &Record<'_>, stamp: &RunStamp) -> Mapped {
    let quarantine = |deal_id: Option<Text>, reason: String| {
        Mapped::Quarantined(Box::new(Quarantined {
            deal_id: deal_id.map(String::from),
            reason,
            raw: rec.to_raw(),
            sync_run_id: stamp.run_id.to_string(),
            quarantined_at: stamp.synced_at,
        }))
    };
    if let Some(why) = rec.unreadable() {
        return quarantine(rec.id().map(Text::from), format!("record: {why}"));
    }
    if !rec.is_object() {
        return quarantine(None, "record: not a JSON object".into());
    }
    let wire = match wire(rec, stamp.promoted) {
        Ok(w) => w,
        Err(reason) => return quarantine(None, reason),
    };
    let id = id_of(wire.standard[slot::ID]);
    let stage = match text("Stage", wire.standard[slot::STAGE]) {
        Ok(s) => s,
        Err(e) => return quarantine(id.ok().flatten(), e.to_string()),
    };
    if stage.as_deref() != Some(CLOSED_WON) {
        return Mapped::NotClosedWon { deal_id: id.ok().flatten(), stage };
    }
    let deal_id = match id {
        Ok(Some(id)) => id,
        Ok(None) => return quarantine(None, "id: missing".into()),
        Err(e) => return quarantine(None, e.to_string()),
    };
    let fields = match typed_fields(&wire) {
        Ok(f) => f,
        Err(e) => return quarantine(Some(deal_id), e.to_string()),
    };
    let extras = match stamp.promoted.iter().zip(&wire.extras).map(|(p, r)| promoted::read(p, *r)).collect() {
        Ok(values) => Extras { columns: stamp.promoted, values },
        Err(e) => return quarantine(Some(deal_id), e.to_string()),
    };
    let mut row = fields.into_row(deal_id, stage.unwrap_or_default(), rec.to_raw(), stamp);
    row.extras = extras;
    Mapped::Row(Box::new(row))
}

/// Maps one record given as JSON text, for tests and tools (a sync maps the records of a page with
/// `map_record`). Panics unless `text` is one JSON value.
pub fn map_json(text: &str, stamp: &RunStamp) -> Mapped {
    match Page::of_records([text], false) {
        Ok(page) if page.len() == 1 => map_record(&page.get(0).expect("one record"), stamp),
        _ => panic!("map_json needs one JSON value, got {text:?}"),
    }
}

/// Every typed column of a row, read before the raw record is moved into it.
struct Typed {
    deal_name: Option<Text>,
    amount: Option<Decimal>,
    expected_revenue: Option<Decimal>,
    exchange_rate: Option<Decimal>,
    currency: Option<Text>,
    probability: Option<i64>,
    closing_date: Option<NaiveDate>,
    account: (Option<Text>, Option<Text>),
    contact: (Option<Text>, Option<Text>),
    owner: Owner,
    pipeline: Option<Text>,
    deal_type: Option<Text>,
    lead_source: Option<Text>,
    tags: Vec<Text>,
    created_time: Option<DateTime<Utc>>,
    modified_time: DateTime<Utc>,
}

impl Typed {
    fn into_row(self, deal_id: Text, stage: Text, raw: Raw, stamp: &RunStamp) -> DealRow {
        DealRow {
            deal_id,
            deal_name: self.deal_name,
            stage,
            amount: self.amount,
            expected_revenue: self.expected_revenue,
            exchange_rate: self.exchange_rate,
            currency: self.currency,
            probability: self.probability,
            closing_date: self.closing_date,
            account_id: self.account.0,
            account_name: self.account.1,
            contact_id: self.contact.0,
            contact_name: self.contact.1,
            owner_id: self.owner.0,
            owner_name: self.owner.1,
            owner_email: self.owner.2,
            pipeline: self.pipeline,
            deal_type: self.deal_type,
            lead_source: self.lead_source,
            tags: self.tags,
            created_time: self.created_time,
            modified_time: self.modified_time,
            raw,
            sync_run_id: stamp.run_id.clone(),
            synced_at: stamp.synced_at,
            is_closed_won: true,
            is_deleted: false,
            deleted_time: None,
            extras: Extras::default(),
        }
    }
}

fn typed_fields(w: &DealWire) -> Result<Typed, FieldError> {
    let v = |i: usize| w.standard[i];
    let json = |i: usize| w.standard[i].map(|f| f.value());
    let modified_time = instant_field("Modified_Time", v(slot::MODIFIED_TIME))?
        .ok_or_else(|| FieldError { field: "Modified_Time", problem: "missing; it decides which copy is newer".into() })?;
    Ok(Typed {
        deal_name: text("Deal_Name", v(slot::DEAL_NAME))?,
        amount: decimal("Amount", v(slot::AMOUNT))?,
        expected_revenue: decimal("Expected_Revenue", v(slot::EXPECTED_REVENUE))?,
        exchange_rate: decimal("Exchange_Rate", v(slot::EXCHANGE_RATE))?,
        currency: text("Currency", v(slot::CURRENCY))?,
        probability: integer("Probability", v(slot::PROBABILITY))?,
        closing_date: date("Closing_Date", v(slot::CLOSING_DATE))?,
        account: lookup("Account_Name", json(slot::ACCOUNT))?,
        contact: lookup("Contact_Name", json(slot::CONTACT))?,
        owner: owner(json(slot::OWNER))?,
        pipeline: text("Pipeline", v(slot::PIPELINE))?,
        deal_type: text("Type", v(slot::TYPE))?,
        lead_source: text("Lead_Source", v(slot::LEAD_SOURCE))?,
        tags: tags(json(slot::TAG))?,
        created_time: instant_field("Created_Time", v(slot::CREATED_TIME))?,
        modified_time,
    })
}

fn err(field: &'static str, problem: impl Into<String>) -> FieldError {
    FieldError { field, problem: problem.into() }
}

/// A short, safe excerpt of a value's JSON text for an error message.
fn shown(raw: &str) -> String {
    if raw.chars().count() > 60 {
        format!("{}…", raw.chars().take(60).collect::<String>())
    } else {
        raw.to_string()
    }
}

/// The value, unless it is missing or `null`.
pub(crate) fn present<'a, W: Wire<'a>>(raw: Option<W>) -> Option<W> {
    raw.filter(|r| r.json() != "null")
}

/// A value to read: its JSON text, and the string itself when the page's scanner already found it to be a
/// string without escapes (most of a record's), which then needs neither a check nor unescaping.
pub(crate) trait Wire<'a>: Copy {
    fn json(self) -> &'a str;
    fn plain_string(self) -> Option<&'a str> {
        None
    }
}

impl<'a> Wire<'a> for &'a str {
    fn json(self) -> &'a str {
        self
    }
}

impl<'a> Wire<'a> for Field<'a> {
    fn json(self) -> &'a str {
        self.value()
    }
    fn plain_string(self) -> Option<&'a str> {
        Field::plain_string(&self)
    }
}

/// The text of a JSON string value, borrowed unless it has escapes.
fn text_of<'a>(field: &'static str, raw: impl Wire<'a>) -> Result<Cow<'a, str>, FieldError> {
    if let Some(text) = raw.plain_string() {
        return Ok(Cow::Borrowed(text));
    }
    let raw = raw.json();
    json::string(raw).ok_or_else(|| err(field, format!("expected text, got {}", shown(raw))))
}

fn text<'a>(field: &'static str, raw: Option<impl Wire<'a>>) -> Result<Option<Text>, FieldError> {
    let Some(raw) = present(raw) else { return Ok(None) };
    text_of(field, raw).map(|t| Some(Text::from(t)))
}

/// A Zoho id: a string of digits (the usual form) or a JSON integer.
fn id_of<'a>(wire: Option<impl Wire<'a>>) -> Result<Option<Text>, FieldError> {
    let Some(wire) = present(wire) else { return Ok(None) };
    let raw = wire.json();
    let id = if raw.starts_with('"') { text_of("id", wire)? } else { Cow::Borrowed(raw) };
    let id = id.trim();
    if id.is_empty() || id.len() > 40 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("id", format!("expected a numeric id, got {}", shown(raw))));
    }
    Ok(Some(Text::from(id)))
}

/// An exact decimal from a JSON number or a numeric string. `""` counts as empty.
pub(crate) fn decimal<'a>(field: &'static str, wire: Option<impl Wire<'a>>) -> Result<Option<Decimal>, FieldError> {
    let Some(wire) = present(wire) else { return Ok(None) };
    let raw = wire.json();
    let quoted;
    let digits = if raw.starts_with('"') {
        quoted = text_of(field, wire).map_err(|_| err(field, format!("unreadable {}", shown(raw))))?;
        let inner = quoted.trim();
        if inner.is_empty() {
            return Ok(None);
        }
        inner
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        raw
    } else {
        return Err(err(field, format!("expected a number, got {}", shown(raw))));
    };
    let parsed = if digits.contains(['e', 'E']) {
        Decimal::from_scientific(digits)
    } else {
        Decimal::from_str_exact(digits)
    };
    let d = parsed.map_err(|_| {
        err(field, format!("{} is not a decimal number that fits 28 significant digits exactly", shown(raw)))
    })?;
    let d = d.normalize();
    if d.scale() > MAX_SCALE {
        return Err(err(field, format!("{} has more than {MAX_SCALE} digits after the point", shown(raw))));
    }
    Ok(Some(d))
}

fn integer<'a>(field: &'static str, raw: Option<impl Wire<'a>>) -> Result<Option<i64>, FieldError> {
    let Some(d) = decimal(field, raw)? else { return Ok(None) };
    if !d.fract().is_zero() {
        return Err(err(field, format!("{d} is not a whole number")));
    }
    i64::try_from(d).map(Some).map_err(|_| err(field, format!("{d} is out of range")))
}

/// `YYYY-MM-DD` read directly; anything else goes through chrono's parser, which says no more kindly.
fn ymd(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

fn date<'a>(field: &'static str, raw: Option<impl Wire<'a>>) -> Result<Option<NaiveDate>, FieldError> {
    let Some(raw) = present(raw) else { return Ok(None) };
    let s = text_of(field, raw)?;
    if s.is_empty() {
        return Ok(None);
    }
    ymd(&s)
        .or_else(|| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok().filter(|_| s.len() == 10))
        .map(Some)
        .ok_or_else(|| err(field, format!("\"{s}\" is not a YYYY-MM-DD date")))
}

/// An instant with an offset, as Zoho writes them (`2026-11-27T10:00:00+05:30`), converted to UTC.
fn instant_field<'a>(field: &'static str, raw: Option<impl Wire<'a>>) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(raw) = present(raw) else { return Ok(None) };
    let s = text_of(field, raw)?;
    if s.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(&s)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| err(field, format!("\"{s}\" is not an ISO-8601 date-time with an offset")))
}

/// A lookup (`{"name", "id"}`, the owner also with `email`), as those members.
#[derive(Default)]
struct LookupWire<'a> {
    id: Option<Field<'a>>,
    name: Option<Field<'a>>,
    email: Option<Field<'a>>,
}

fn lookup_wire<'a>(field: &'static str, raw: Option<&'a str>) -> Result<Option<LookupWire<'a>>, FieldError> {
    let Some(raw) = present(raw) else { return Ok(None) };
    let mut l = LookupWire::default();
    let mut repeated = false;
    let object = json::each_member(raw, |f| {
        let slot = if f.is("id") {
            &mut l.id
        } else if f.is("name") {
            &mut l.name
        } else if f.is("email") {
            &mut l.email
        } else {
            return;
        };
        repeated |= slot.replace(f).is_some();
    });
    if !object || repeated {
        return Err(err(field, format!("expected an object with id and name, got {}", shown(raw))));
    }
    Ok(Some(l))
}

fn lookup_id<'a>(field: &'static str, raw: Option<impl Wire<'a>>) -> Result<Option<Text>, FieldError> {
    id_of(raw).map_err(|e| err(field, format!("id {}", e.problem)))
}

fn lookup(field: &'static str, raw: Option<&str>) -> Result<(Option<Text>, Option<Text>), FieldError> {
    match lookup_wire(field, raw)? {
        None => Ok((None, None)),
        Some(l) => Ok((lookup_id(field, l.id)?, text(field, l.name)?)),
    }
}

type Owner = (Option<Text>, Option<Text>, Option<Text>);

fn owner(raw: Option<&str>) -> Result<Owner, FieldError> {
    match lookup_wire("Owner", raw)? {
        None => Ok((None, None, None)),
        Some(l) => Ok((lookup_id("Owner", l.id)?, text("Owner", l.name)?, text("Owner", l.email)?)),
    }
}

/// Tags arrive as objects (`{"name","id"}`); plain strings are accepted too.
fn tags(raw: Option<&str>) -> Result<Vec<Text>, FieldError> {
    let Some(raw) = present(raw) else { return Ok(Vec::new()) };
    names("Tag", raw, "tags")
}

/// A JSON list of strings or of objects with a `name` (tags, multi-select lookups), as the names; objects
/// whose name is missing or null are left out.
pub(crate) fn names(field: &'static str, raw: &str, what: &str) -> Result<Vec<Text>, FieldError> {
    let mut out = Vec::new();
    let mut readable = true;
    let list = json::each_element(raw, |item| {
        let name = if item.starts_with('{') {
            let (mut name, mut seen) = (None, 0);
            readable &= json::each_member(item, |f| {
                if f.is("name") {
                    name = Some(f);
                    seen += 1;
                }
            });
            readable &= seen <= 1;
            let Some(name) = present(name) else { return };
            if let Some(n) = name.plain_string() {
                out.push(Text::from(n));
                return;
            }
            name.value()
        } else {
            item
        };
        match json::string(name) {
            Some(n) => out.push(Text::from(n)),
            None => readable = false,
        }
    });
    if !list || !readable {
        return Err(err(field, format!("expected a list of {what}, got {}", shown(raw))));
    }
    Ok(out)
}

/// One column of the target table, described once for every sink and for `dealsync schema`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Column {
    pub name: &'static str,
    /// BigQuery type.
    #[serde(rename = "type")]
    pub bq_type: &'static str,
    /// BigQuery mode: REQUIRED, NULLABLE or REPEATED.
    pub mode: &'static str,
    #[serde(skip)]
    pub sqlite_type: &'static str,
    pub description: &'static str,
}

const fn col(name: &'static str, bq_type: &'static str, mode: &'static str, sqlite_type: &'static str, description: &'static str) -> Column {
    Column { name, bq_type, mode, sqlite_type, description }
}

/// The columns of `closed_won_deals`, in order.
pub const COLUMNS: &[Column] = &[
    col("deal_id", "STRING", "REQUIRED", "TEXT NOT NULL PRIMARY KEY", "Zoho record id of the deal"),
    col("deal_name", "STRING", "NULLABLE", "TEXT", "Deal_Name"),
    col("stage", "STRING", "REQUIRED", "TEXT NOT NULL", "Stage; always exactly 'Closed Won'"),
    col("amount", "NUMERIC", "NULLABLE", "TEXT", "Amount in the deal's currency, exact decimal"),
    col("expected_revenue", "NUMERIC", "NULLABLE", "TEXT", "Expected_Revenue in the deal's currency"),
    col("exchange_rate", "NUMERIC", "NULLABLE", "TEXT", "Exchange_Rate of the deal's currency as delivered"),
    col("currency", "STRING", "NULLABLE", "TEXT", "ISO currency code of amount and expected_revenue"),
    col("probability", "INT64", "NULLABLE", "INTEGER", "Probability in percent"),
    col("closing_date", "DATE", "NULLABLE", "TEXT", "Closing_Date (YYYY-MM-DD)"),
    col("account_id", "STRING", "NULLABLE", "TEXT", "Account_Name.id"),
    col("account_name", "STRING", "NULLABLE", "TEXT", "Account_Name.name"),
    col("contact_id", "STRING", "NULLABLE", "TEXT", "Contact_Name.id"),
    col("contact_name", "STRING", "NULLABLE", "TEXT", "Contact_Name.name"),
    col("owner_id", "STRING", "NULLABLE", "TEXT", "Owner.id"),
    col("owner_name", "STRING", "NULLABLE", "TEXT", "Owner.name"),
    col("owner_email", "STRING", "NULLABLE", "TEXT", "Owner.email"),
    col("pipeline", "STRING", "NULLABLE", "TEXT", "Pipeline"),
    col("type", "STRING", "NULLABLE", "TEXT", "Type"),
    col("lead_source", "STRING", "NULLABLE", "TEXT", "Lead_Source"),
    col("tags", "STRING", "REPEATED", "TEXT NOT NULL DEFAULT '[]'", "Tag names (a JSON array in SQLite)"),
    col("created_time", "TIMESTAMP", "NULLABLE", "TEXT", "Created_Time in UTC"),
    col("modified_time", "TIMESTAMP", "REQUIRED", "TEXT NOT NULL", "Modified_Time in UTC; the newer copy wins"),
    col("raw", "JSON", "NULLABLE", "TEXT NOT NULL", "The complete record as received, custom fields included"),
    col("sync_run_id", "STRING", "REQUIRED", "TEXT NOT NULL", "Run that last wrote the row"),
    col("synced_at", "TIMESTAMP", "REQUIRED", "TEXT NOT NULL", "When that run started"),
    col("is_closed_won", "BOOL", "NULLABLE", "INTEGER NOT NULL DEFAULT 1", "False once the deal was reopened or lost"),
    col("is_deleted", "BOOL", "NULLABLE", "INTEGER NOT NULL DEFAULT 0", "True once the deal was deleted in Zoho"),
    col("deleted_time", "TIMESTAMP", "NULLABLE", "TEXT", "When it was deleted in Zoho"),
];

/// The Zoho fields the standard columns come from (for `dealsync fields`).
pub const STANDARD_FIELDS: &[(&str, &[&str])] = &[
    ("id", &["deal_id"]),
    ("Deal_Name", &["deal_name"]),
    ("Stage", &["stage", "is_closed_won"]),
    ("Amount", &["amount"]),
    ("Expected_Revenue", &["expected_revenue"]),
    ("Exchange_Rate", &["exchange_rate"]),
    ("Currency", &["currency"]),
    ("Probability", &["probability"]),
    ("Closing_Date", &["closing_date"]),
    ("Account_Name", &["account_id", "account_name"]),
    ("Contact_Name", &["contact_id", "contact_name"]),
    ("Owner", &["owner_id", "owner_name", "owner_email"]),
    ("Pipeline", &["pipeline"]),
    ("Type", &["type"]),
    ("Lead_Source", &["lead_source"]),
    ("Tag", &["tags"]),
    ("Created_Time", &["created_time"]),
    ("Modified_Time", &["modified_time"]),
];

impl FromStr for RunStamp {
    type Err = std::convert::Infallible;
    /// For tests: a stamp with this run id, synced now.
    fn from_str(run_id: &str) -> Result<Self, Self::Err> {
        Ok(RunStamp { run_id: run_id.into(), synced_at: Utc::now(), promoted: &[] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> RunStamp {
        "run-1".parse().unwrap()
    }

    fn map(json: &str) -> Mapped {
        map_json(json, &stamp())
    }

    fn row(json: &str) -> DealRow {
        match map(json) {
            Mapped::Row(r) => *r,
            other => panic!("expected a row, got {other:?}"),
        }
    }

    fn reason(json: &str) -> String {
        match map(json) {
            Mapped::Quarantined(q) => q.reason,
            other => panic!("expected quarantine, got {other:?}"),
        }
    }

    const GOOD: &str = r#"{"id":"4876876000001034017","Deal_Name":"Zylker GmbH – renewal ✓","Stage":"Closed Won",
        "Amount":12345678901.25,"Expected_Revenue":0.10,"Exchange_Rate":0.92,"Currency":"EUR","Probability":100,
        "Closing_Date":"2026-11-27","Account_Name":{"name":"Zylker GmbH","id":"4876876000000624001"},
        "Contact_Name":null,"Owner":{"name":"Patricia Boyle","id":"4876876000000225013","email":"p.boyle@zylker.com"},
        "Pipeline":"Standard (Standard)","Type":"Existing Business","Lead_Source":"Partner",
        "Tag":[{"name":"renewal","id":"1"},{"name":"eu","id":"2"}],"Created_Time":"2026-10-17T09:12:44+05:30",
        "Modified_Time":"2026-11-27T10:00:00+05:30","Contract_Value":52000.0}"#;

    #[test]
    fn a_complete_record_maps_every_field_exactly() {
        let r = row(GOOD);
        assert_eq!(r.deal_id, "4876876000001034017");
        assert_eq!(r.amount.unwrap().to_string(), "12345678901.25");
        assert_eq!(r.expected_revenue.unwrap().to_string(), "0.1");
        assert_eq!(r.exchange_rate.unwrap().to_string(), "0.92");
        assert_eq!(r.closing_date.unwrap().to_string(), "2026-11-27");
        assert_eq!(format_instant(&r.modified_time), "2026-11-27T04:30:00Z");
        assert_eq!(r.owner_email.as_deref(), Some("p.boyle@zylker.com"));
        assert_eq!(r.contact_id, None);
        assert_eq!(r.tags, vec!["renewal", "eu"]);
        assert!(r.raw.get().contains("Contract_Value"), "raw keeps custom fields");
        assert_eq!(r.raw.get(), GOOD, "raw is the record exactly as received");
    }

    #[test]
    fn a_json_line_holds_every_column_and_the_record_verbatim() {
        let r = row(GOOD);
        let mut buf = Vec::new();
        r.write_json_line(&mut buf);
        let line = std::str::from_utf8(&buf).unwrap();
        assert!(line.ends_with(&format!(",\"raw\":{GOOD}}}\n")), "raw last and verbatim: {line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), COLUMNS.len());
        assert_eq!(v["raw"], serde_json::from_str::<serde_json::Value>(GOOD).unwrap());
        assert_eq!((v["deal_id"].as_str(), v["amount"].as_str()), (Some("4876876000001034017"), Some("12345678901.25")));
    }

    proptest::proptest! {
        #[test]
        fn short_texts_are_what_chrono_and_rust_decimal_write(
            secs in -62_167_219_200i64..253_402_300_800i64,
            far in proptest::prop_oneof![proptest::strategy::Just(0i64), -300_000_000_000i64..300_000_000_000i64],
            leap in proptest::bool::weighted(0.05),
            mantissa in proptest::num::i128::ANY,
            scale in 0u32..=28,
        ) {
            // Years 0-9999 mostly, some far outside (chrono writes a sign), and leap seconds.
            let at = secs + far;
            let t = if leap {
                // chrono takes a leap second only at second 59.
                DateTime::from_timestamp(at - at.rem_euclid(60) + 59, 1_500_000_000)
            } else {
                DateTime::from_timestamp(at, 0)
            }
            .unwrap();
            proptest::prop_assert_eq!(instant_text(&t).as_str().to_string(), t.to_rfc3339_opts(SecondsFormat::Secs, true));
            let d = t.date_naive();
            proptest::prop_assert_eq!(date_text(d).as_str().to_string(), d.format("%Y-%m-%d").to_string());
            let m = mantissa % 79_228_162_514_264_337_593_543_950_335i128;
            let dec = Decimal::from_i128_with_scale(m, scale);
            proptest::prop_assert_eq!(decimal_text(&dec).as_str().to_string(), dec.normalize().to_string());
        }
    }

    #[test]
    fn money_never_passes_through_a_float() {
        let q = reason(&GOOD.replace("12345678901.25", "0.30000000000000004"));
        assert!(q.starts_with("Amount:"), "{q}");
        let r = row(&GOOD.replace("12345678901.25", "\"1234.5\""));
        assert_eq!(r.amount.unwrap().to_string(), "1234.5");
        let r = row(&GOOD.replace("12345678901.25", "1.5e3"));
        assert_eq!(r.amount.unwrap().to_string(), "1500");
    }

    #[test]
    fn a_stage_that_only_contains_closed_won_is_not_ours() {
        match map(&GOOD.replace("\"Closed Won\"", "\"Closed Won - Pending Finance\"")) {
            Mapped::NotClosedWon { deal_id, stage } => {
                assert_eq!(deal_id.as_deref(), Some("4876876000001034017"));
                assert_eq!(stage.as_deref(), Some("Closed Won - Pending Finance"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_records_are_quarantined_with_the_field_named() {
        assert_eq!(reason(&GOOD.replace("\"id\":\"4876876000001034017\",", "")), "id: missing");
        assert!(reason(&GOOD.replace("\"2026-11-27\"", "\"27/11/2026\"")).starts_with("Closing_Date: \"27/11/2026\""));
        assert!(reason(&GOOD.replace("12345678901.25", "\"abc\"")).starts_with("Amount:"));
        assert!(reason(&GOOD.replace("\"Modified_Time\":\"2026-11-27T10:00:00+05:30\",", "")).starts_with("Modified_Time"));
        assert!(reason(&GOOD.replace("\"Probability\":100", "\"Probability\":99.5")).starts_with("Probability"));
        assert!(reason(&GOOD.replace("{\"name\":\"Zylker GmbH\",\"id\":\"4876876000000624001\"}", "\"Zylker\""))
            .starts_with("Account_Name"));
        assert!(reason("[1,2]").starts_with("record"));
    }

    #[test]
    fn null_amounts_and_lookups_are_empty_not_errors() {
        let r = row(&GOOD.replace("12345678901.25", "null").replace("\"Owner\":{", "\"Ownr\":{"));
        assert_eq!(r.amount, None);
        assert_eq!(r.owner_id, None);
    }

    #[test]
    fn a_lone_surrogate_escape_quarantines_its_record_naming_the_field_and_raw_keeps_it() {
        let bad = GOOD.replace("Zylker GmbH – renewal ✓", r"bad \udc00 and \ud800x");
        let Mapped::Quarantined(q) = map(&bad) else { panic!("quarantined") };
        assert!(q.reason.starts_with("record: `Deal_Name`: lone leading surrogate"), "{}", q.reason);
        assert_eq!(q.deal_id.as_deref(), Some("4876876000001034017"));
        assert_eq!(q.raw.get(), bad, "raw is the record as received");
        let r = row(&GOOD.replace("Zylker GmbH – renewal ✓", r"pair \ud83d\ude80 \\udc00"));
        assert_eq!(r.deal_name.as_deref(), Some("pair 🚀 \\udc00"), "a surrogate pair is one character");
    }

    #[test]
    fn a_record_nested_deeper_than_the_parser_reads_is_quarantined_and_its_page_neighbours_map() {
        let deep = GOOD.replace("\"Contract_Value\":52000.0", &format!("\"Custom\":{}1{}", "[".repeat(2000), "]".repeat(2000)));
        let page = Page::of_records([GOOD, deep.as_str(), GOOD], false).unwrap();
        let mapped: Vec<Mapped> = page.records().map(|r| map_record(&r, &stamp())).collect();
        assert!(matches!(mapped[0], Mapped::Row(_)) && matches!(mapped[2], Mapped::Row(_)), "{mapped:?}");
        let Mapped::Quarantined(q) = &mapped[1] else { panic!("{:?}", mapped[1]) };
        assert!(q.reason.starts_with("record: `Custom`: nested more than 200 levels deep"), "{}", q.reason);
        assert_eq!(q.deal_id.as_deref(), Some("4876876000001034017"), "the id is read at any depth");
        assert_eq!(q.raw.get(), deep);
        // 200 levels are still read.
        let fine = GOOD.replace("\"Contract_Value\":52000.0", &format!("\"Custom\":{}1{}", "[".repeat(190), "]".repeat(190)));
        assert!(matches!(map(&fine), Mapped::Row(_)));
    }

    #[test]
    fn odd_but_readable_shapes_map() {
        let huge = "x".repeat(100_000);
        let r = row(&GOOD.replace("\"Contract_Value\":52000.0", &format!("\"Description\":\"{huge}\",\"Unknown\":{{\"a\":[1,2]}}")));
        assert!(r.raw.get().len() > 100_000);
        let r = row(&GOOD.replace("\"Closing_Date\":\"2026-11-27\",", ""));
        assert_eq!(r.closing_date, None, "a missing closing date is empty, not an error");
        let r = row(&GOOD.replace("12345678901.25", "\"9999999999999999999.123456789\""));
        assert_eq!(r.amount.unwrap().to_string(), "9999999999999999999.123456789");
        assert!(reason(&GOOD.replace("12345678901.25", "123456789012345678901234567890.5")).starts_with("Amount:"));
        assert!(reason(&GOOD.replace("\"2026-11-27\"", "\"2026-11-27T00:00:00Z\"")).starts_with("Closing_Date:"));
        assert!(reason(&GOOD.replace("\"2026-11-27T10:00:00+05:30\"", "\"27 Nov 2026\"")).starts_with("Modified_Time:"));
    }

    #[test]
    fn promoted_fields_are_read_in_the_same_pass_standard_ones_included() {
        use promoted::{FieldType, Value};
        static PROMOTED: [Promoted; 3] = [
            Promoted { field: "Contract_Value", column: "contract_value", ty: FieldType::Decimal },
            Promoted { field: "Account_Name", column: "account", ty: FieldType::LookupName },
            Promoted { field: "Missing", column: "missing", ty: FieldType::Text },
        ];
        let stamp = RunStamp { promoted: &PROMOTED, ..stamp() };
        let Mapped::Row(r) = map_json(GOOD, &stamp) else { panic!() };
        assert_eq!(r.extras.values, vec![Value::Decimal("52000".parse().unwrap()), Value::Text("Zylker GmbH".into()), Value::Null]);
        assert_eq!(r.account_name.as_deref(), Some("Zylker GmbH"), "the standard column is still filled");
        let json = serde_json::to_value(&*r).unwrap();
        assert_eq!((json["contract_value"].clone(), json["missing"].clone()), ("52000".into(), serde_json::Value::Null));

        let bad = GOOD.replace("\"Contract_Value\":52000.0", "\"Contract_Value\":\"n/a\"");
        match map_json(&bad, &stamp) {
            Mapped::Quarantined(q) => assert!(q.reason.starts_with("Contract_Value:"), "{}", q.reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_quarantined_and_an_escaped_key_is_read() {
        let twice = GOOD.replace("\"Stage\":\"Closed Won\"", "\"Stage\":\"Closed Won\",\"Stage\":\"Closed Lost\"");
        assert!(reason(&twice).contains("duplicate field `Stage`"), "{}", reason(&twice));
        let escaped = row(&GOOD.replace("\"Deal_Name\"", "\"Deal\\u005fName\""));
        assert_eq!(escaped.deal_name.as_deref(), Some("Zylker GmbH – renewal ✓"));
    }

    #[test]
    fn values_with_escapes_are_read_unescaped_like_plain_ones() {
        let escaped = GOOD
            .replace("\"4876876000001034017\"", "\"48768760000010340\\u00317\"")
            .replace("\"Zylker GmbH – renewal ✓\"", "\"Zylker \\\"GmbH\\\"\\nrenewal\"")
            .replace("\"2026-11-27\"", "\"2026\\u002d11-27\"")
            .replace("\"2026-11-27T10:00:00+05:30\"", "\"2026-11-27T10:00:00\\u002b05:30\"")
            .replace("\"EUR\"", "\"\\u0045UR\"");
        let (e, p) = (row(&escaped), row(GOOD));
        assert_eq!(e.deal_id, "4876876000001034017");
        assert_eq!(e.deal_name.as_deref(), Some("Zylker \"GmbH\"\nrenewal"));
        assert_eq!((e.closing_date, e.modified_time, e.currency.as_deref()), (p.closing_date, p.modified_time, Some("EUR")));
        assert_ne!(e.raw.get(), p.raw.get(), "raw keeps the escapes as sent");
    }

    #[test]
    fn numeric_ids_and_string_tags_are_accepted() {
        let r = row(&GOOD.replace("\"4876876000001034017\"", "4876876000001034017").replace(
            "[{\"name\":\"renewal\",\"id\":\"1\"},{\"name\":\"eu\",\"id\":\"2\"}]",
            "[\"a\",\"b\"]",
        ));
        assert_eq!(r.deal_id, "4876876000001034017");
        assert_eq!(r.tags, vec!["a", "b"]);
    }
}
