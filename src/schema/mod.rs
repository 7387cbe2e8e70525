//! The one table of what dealsync stores, and where each value comes from. Every list that used to be written
//! by hand is derived from it: the columns of the target table (`dealsync schema`), the BigQuery schema and the
//! SQLite DDL, the fields read by id from Zoho, what `dealsync fields` reports as stored, and each sink's row
//! writer, which walks a row's values in this order. Adding a standard Zoho field is one entry in `STANDARD`
//! (see CONTRIBUTING.md); fields promoted in the config file are entries of the same kind, after the standard
//! ones. The run ledger's and the quarantine's columns are defined here once too.

pub mod promoted;

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

pub use promoted::{FieldType, Promoted};

/// The stage this tool syncs. Zoho's `equals` on text matches like *contains*, so stages are checked exactly.
pub const CLOSED_WON: &str = "Closed Won";

/// BigQuery NUMERIC keeps 9 digits after the point; more would be silently rounded there, so they are refused.
pub const MAX_SCALE: u32 = 9;

/// Instants are written the same way everywhere: RFC 3339, UTC, whole seconds (Zoho's precision). The fixed
/// width makes the text sort like the instant, so SQLite can index and range-scan it.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Sorts numeric ids by value (shorter first), others as text, so that a warehouse's and Zoho's lists sort alike.
pub fn sort_ids(ids: &mut [String]) {
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
}

/// The type of a column's values, in every sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    /// Exact decimals: NUMERIC in BigQuery, text in SQLite, never a float.
    Decimal,
    Boolean,
    Date,
    /// An instant in UTC.
    Timestamp,
    /// A list of strings: `ARRAY<STRING>` in BigQuery, a JSON array in SQLite.
    TextList,
    /// Any JSON value, kept as JSON text.
    Json,
}

impl ColumnType {
    /// BigQuery's type (a list is a REPEATED STRING).
    pub fn bigquery(self) -> &'static str {
        match self {
            ColumnType::Text | ColumnType::TextList => "STRING",
            ColumnType::Integer => "INT64",
            ColumnType::Decimal => "NUMERIC",
            ColumnType::Boolean => "BOOL",
            ColumnType::Date => "DATE",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Json => "JSON",
        }
    }

    /// SQLite's type: integers and booleans as INTEGER, everything else as exact text.
    pub fn sqlite(self) -> &'static str {
        match self {
            ColumnType::Integer | ColumnType::Boolean => "INTEGER",
            _ => "TEXT",
        }
    }
}

/// How a value is read from a Zoho record's field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A JSON string (numbers and booleans are kept as their text).
    Text,
    /// A Zoho id: a string of digits or a JSON integer.
    Id,
    Integer,
    /// An exact decimal from a JSON number or numeric string.
    Decimal,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An ISO-8601 instant with offset.
    Timestamp,
    /// A list of strings, or of objects with a `name` (tags, multi-select picklists).
    Names,
    /// The `id`, `name` or `email` of a lookup (`{"name","id"}`; a user also has `email`).
    LookupId,
    LookupName,
    LookupEmail,
    /// Any JSON value, as it is.
    Json,
}

impl Read {
    /// The column type a value read this way has.
    pub const fn column_type(self) -> ColumnType {
        match self {
            Read::Text | Read::Id | Read::LookupId | Read::LookupName | Read::LookupEmail => ColumnType::Text,
            Read::Integer => ColumnType::Integer,
            Read::Decimal => ColumnType::Decimal,
            Read::Boolean => ColumnType::Boolean,
            Read::Date => ColumnType::Date,
            Read::Timestamp => ColumnType::Timestamp,
            Read::Names => ColumnType::TextList,
            Read::Json => ColumnType::Json,
        }
    }
}

/// Where a column's value comes from (`F` names the Zoho field: borrowed in the table, owned for promoted fields).
#[derive(Debug, Clone, PartialEq, Eq, Copy)]
pub enum Source<F = Cow<'static, str>> {
    /// A field of the Zoho record.
    Zoho {
        field: F,
        read: Read,
    },
    /// The record itself, exactly as received.
    Raw,
    /// The run that wrote the row, and when it started.
    RunId,
    SyncedAt,
    /// Set when the row is written; changed later when the CRM says the deal was reopened or deleted.
    Flag(bool),
    /// Empty when written; set later (when the deal is deleted in the CRM).
    Unset,
}

/// One column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: Cow<'static, str>,
    pub ty: ColumnType,
    pub source: Source,
    /// Never empty: BigQuery REQUIRED, SQLite NOT NULL.
    pub required: bool,
    /// What rows written before the column existed hold, as SQL (SQLite's `NOT NULL DEFAULT`); such a column is
    /// NULLABLE in BigQuery, where older rows read NULL.
    pub default: Option<&'static str>,
    pub description: Cow<'static, str>,
}

impl Column {
    /// BigQuery's mode.
    pub fn mode(&self) -> &'static str {
        if self.ty == ColumnType::TextList {
            "REPEATED"
        } else if self.required && self.source != Source::Raw {
            // `raw` has been NULLABLE in BigQuery since the first release; new tables match the existing ones.
            "REQUIRED"
        } else {
            "NULLABLE"
        }
    }

    /// The column's SQLite definition after its name, in the target table (where `deal_id` is the key).
    pub fn sqlite_definition(&self) -> String {
        self.sqlite_definition_in(self.name == KEY)
    }

    /// The column's SQLite definition after its name, as the primary key of its table or not (the quarantine
    /// has a `deal_id` column too, and keeps one row per deal and run).
    pub fn sqlite_definition_in(&self, primary_key: bool) -> String {
        let mut d = self.ty.sqlite().to_string();
        if self.required || self.default.is_some() {
            d.push_str(" NOT NULL");
        }
        if primary_key {
            d.push_str(" PRIMARY KEY");
        }
        if let Some(v) = self.default {
            d.push_str(" DEFAULT ");
            d.push_str(v);
        }
        d
    }
}

/// BigQuery's JSON schema entry: `{"name", "type", "mode", "description"}`.
impl Serialize for Column {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Column", 4)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("type", self.ty.bigquery())?;
        st.serialize_field("mode", self.mode())?;
        st.serialize_field("description", &self.description)?;
        st.end()
    }
}

/// How a column is kept: `Optional` may be empty; `Required` never is; `Default(sql)` is never empty, and rows
/// written before the column existed hold `sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Optional,
    Required,
    Default(&'static str),
}

/// A column as the tables below write it; `Column` is what a run works with.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub ty: ColumnType,
    pub source: Source<&'static str>,
    pub kept: Kept,
    pub description: &'static str,
}

impl Entry {
    pub fn column(&self) -> Column {
        let (required, default) = match self.kept {
            Kept::Optional => (false, None),
            Kept::Required => (true, None),
            Kept::Default(sql) => (false, Some(sql)),
        };
        let source = match self.source {
            Source::Zoho { field, read } => Source::Zoho { field: Cow::Borrowed(field), read },
            Source::Raw => Source::Raw,
            Source::RunId => Source::RunId,
            Source::SyncedAt => Source::SyncedAt,
            Source::Flag(b) => Source::Flag(b),
            Source::Unset => Source::Unset,
        };
        Column {
            name: Cow::Borrowed(self.name),
            ty: self.ty,
            source,
            required,
            default,
            description: Cow::Borrowed(self.description),
        }
    }
}

/// The columns of a table of entries.
pub fn columns_of(entries: &[Entry]) -> Vec<Column> {
    entries.iter().map(Entry::column).collect()
}

const fn column(
    name: &'static str,
    ty: ColumnType,
    source: Source<&'static str>,
    kept: Kept,
    description: &'static str,
) -> Entry {
    Entry { name, ty, source, kept, description }
}

const fn zoho(name: &'static str, field: &'static str, read: Read, kept: Kept, description: &'static str) -> Entry {
    column(name, read.column_type(), Source::Zoho { field, read }, kept, description)
}

/// The column rows are keyed by.
pub const KEY: &str = "deal_id";

/// The standard columns of `closed_won_deals`, in order. Promoted columns follow them.
pub const STANDARD: [Entry; 28] = {
    use ColumnType as T;
    use Kept::{Default, Optional, Required};
    [
        zoho("deal_id", "id", Read::Id, Required, "Zoho record id of the deal"),
        zoho("deal_name", "Deal_Name", Read::Text, Optional, "Deal_Name"),
        zoho(
            "stage",
            "Stage",
            Read::Text,
            Required,
            "Stage: Closed Won when the deal was synced; its new stage once reopened or lost (see is_closed_won)",
        ),
        zoho("amount", "Amount", Read::Decimal, Optional, "Amount in the deal's currency, exact decimal"),
        zoho(
            "expected_revenue",
            "Expected_Revenue",
            Read::Decimal,
            Optional,
            "Expected_Revenue in the deal's currency",
        ),
        zoho(
            "exchange_rate",
            "Exchange_Rate",
            Read::Decimal,
            Optional,
            "Exchange_Rate of the deal's currency as delivered",
        ),
        zoho("currency", "Currency", Read::Text, Optional, "ISO currency code of amount and expected_revenue"),
        zoho("probability", "Probability", Read::Integer, Optional, "Probability in percent"),
        zoho("closing_date", "Closing_Date", Read::Date, Optional, "Closing_Date (YYYY-MM-DD)"),
        zoho("account_id", "Account_Name", Read::LookupId, Optional, "Account_Name.id"),
        zoho("account_name", "Account_Name", Read::LookupName, Optional, "Account_Name.name"),
        zoho("contact_id", "Contact_Name", Read::LookupId, Optional, "Contact_Name.id"),
        zoho("contact_name", "Contact_Name", Read::LookupName, Optional, "Contact_Name.name"),
        zoho("owner_id", "Owner", Read::LookupId, Optional, "Owner.id"),
        zoho("owner_name", "Owner", Read::LookupName, Optional, "Owner.name"),
        zoho("owner_email", "Owner", Read::LookupEmail, Optional, "Owner.email"),
        zoho("pipeline", "Pipeline", Read::Text, Optional, "Pipeline"),
        zoho("type", "Type", Read::Text, Optional, "Type"),
        zoho("lead_source", "Lead_Source", Read::Text, Optional, "Lead_Source"),
        zoho("tags", "Tag", Read::Names, Default("'[]'"), "Tag names (a JSON array in SQLite)"),
        zoho("created_time", "Created_Time", Read::Timestamp, Optional, "Created_Time in UTC"),
        zoho("modified_time", "Modified_Time", Read::Timestamp, Required, "Modified_Time in UTC; the newer copy wins"),
        column("raw", T::Json, Source::Raw, Required, "The complete record as received, custom fields included"),
        column("sync_run_id", T::Text, Source::RunId, Required, "Run that last wrote the row"),
        column("synced_at", T::Timestamp, Source::SyncedAt, Required, "When that run started"),
        column(
            "is_closed_won",
            T::Boolean,
            Source::Flag(true),
            Default("1"),
            "False once the deal was reopened or lost",
        ),
        column("is_deleted", T::Boolean, Source::Flag(false), Default("0"), "True once the deal was deleted in Zoho"),
        column("deleted_time", T::Timestamp, Source::Unset, Optional, "When it was deleted in Zoho"),
    ]
};

/// The position of a standard column, found by name when the crate is built (a wrong name fails the build).
const fn position(name: &str) -> usize {
    let mut i = 0;
    while i < STANDARD.len() {
        let (a, b) = (STANDARD[i].name.as_bytes(), name.as_bytes());
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
    panic!("not a standard column")
}

/// Positions of the standard columns the code itself reads (the key, the stage, what decides the newer copy…).
pub mod col {
    use super::position;
    pub const DEAL_ID: usize = position("deal_id");
    pub const STAGE: usize = position("stage");
    pub const AMOUNT: usize = position("amount");
    pub const CURRENCY: usize = position("currency");
    pub const CLOSING_DATE: usize = position("closing_date");
    pub const MODIFIED_TIME: usize = position("modified_time");
    pub const RAW: usize = position("raw");
}

/// The target table's columns for a run: the standard ones, then the promoted ones.
pub fn columns(promoted: &[Promoted]) -> Vec<Column> {
    STANDARD.iter().map(Entry::column).chain(promoted.iter().map(Promoted::column)).collect()
}

/// Every Zoho field the columns read, once each, in column order.
pub fn zoho_fields(columns: &[Column]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for c in columns {
        match &c.source {
            Source::Zoho { field, .. } if !fields.iter().any(|f| f == field) => fields.push(field.to_string()),
            _ => {}
        }
    }
    fields
}

/// The standard columns a Zoho field fills (for `dealsync fields`).
pub fn standard_columns_of(field: &str) -> Vec<&'static str> {
    STANDARD
        .iter()
        .filter(|c| matches!(c.source, Source::Zoho { field: f, .. } if f == field))
        .map(|c| c.name)
        .collect()
}

/// One value of a row.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Text(String),
    /// Text every row of a run shares (its id), held once.
    Shared(Arc<str>),
    Integer(i64),
    Decimal(Decimal),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    TextList(Vec<String>),
    Json(Box<RawValue>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            Value::Shared(s) => Some(s),
            _ => None,
        }
    }
}

/// As JSON: decimals as strings in their shortest exact form (no reader turns them into floats), dates as
/// `YYYY-MM-DD`, instants as `format_instant` writes them, JSON as itself.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Text(t) => s.serialize_str(t),
            Value::Shared(t) => s.serialize_str(t),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Decimal(d) => s.collect_str(&d.normalize()),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Date(d) => s.collect_str(d),
            Value::Timestamp(t) => s.serialize_str(&format_instant(t)),
            Value::TextList(l) => l.serialize(s),
            Value::Json(j) => j.serialize(s),
        }
    }
}

/// One deal, ready for any sink: a value per column of the run's table, in column order.
#[derive(Debug, Clone)]
pub struct DealRow {
    pub values: Vec<Value>,
}

impl DealRow {
    pub fn deal_id(&self) -> &str {
        self.values[col::DEAL_ID].as_str().expect("a row has a deal id")
    }

    pub fn stage(&self) -> &str {
        self.values[col::STAGE].as_str().unwrap_or("")
    }

    pub fn modified_time(&self) -> DateTime<Utc> {
        match self.values[col::MODIFIED_TIME] {
            Value::Timestamp(t) => t,
            _ => unreachable!("a row has a modification time"),
        }
    }

    pub fn closing_date(&self) -> Option<NaiveDate> {
        match self.values[col::CLOSING_DATE] {
            Value::Date(d) => Some(d),
            _ => None,
        }
    }

    pub fn amount(&self) -> Option<Decimal> {
        match self.values[col::AMOUNT] {
            Value::Decimal(d) => Some(d),
            _ => None,
        }
    }

    pub fn currency(&self) -> Option<&str> {
        self.values[col::CURRENCY].as_str()
    }

    /// The record as received.
    pub fn raw(&self) -> &RawValue {
        match &self.values[col::RAW] {
            Value::Json(r) => r,
            _ => unreachable!("a row keeps its record"),
        }
    }

    /// The value of the column called `name` among `columns` (the run's), for tests and tools.
    pub fn get(&self, columns: &[Column], name: &str) -> Option<&Value> {
        columns.iter().position(|c| c.name == name).and_then(|i| self.values.get(i))
    }

    /// Appends the row as one line of JSON: every column by name, `raw` last (the long one, for a reader's eye)
    /// and as the record itself.
    pub fn write_json_line(&self, columns: &[Column], buf: &mut Vec<u8>) {
        let members = columns.iter().zip(&self.values);
        let raw = |(c, _): &(&Column, &Value)| c.source == Source::Raw;
        write_members(members.clone().filter(|m| !raw(m)).chain(members.filter(raw)), buf);
        buf.push(b'\n');
    }

    /// Appends the row as a JSON object.
    pub fn write_json(&self, columns: &[Column], buf: &mut Vec<u8>) {
        write_object(columns, &self.values, buf);
    }
}

/// Appends `{"column": value, …}` for values in column order.
pub fn write_object(columns: &[Column], values: &[Value], buf: &mut Vec<u8>) {
    write_members(columns.iter().zip(values), buf);
}

fn write_members<'a>(members: impl Iterator<Item = (&'a Column, &'a Value)>, buf: &mut Vec<u8>) {
    let mut json = serde_json::Serializer::new(buf);
    json.collect_map(members.map(|(c, v)| (&c.name, v))).expect("values serialize");
}

/// A record that could not be turned into a row, with the reason, kept for an operator to look at.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub deal_id: Option<String>,
    pub reason: String,
    pub raw: Box<RawValue>,
    pub sync_run_id: String,
    #[serde(serialize_with = "instant")]
    pub quarantined_at: DateTime<Utc>,
}

fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_instant(t))
}

/// The columns of `_dealsync_quarantine`.
pub const QUARANTINE: [Entry; 5] = {
    use ColumnType as T;
    use Kept::{Optional, Required};
    [
        column("run_id", T::Text, Source::Unset, Required, "Run that met the record"),
        column("deal_id", T::Text, Source::Unset, Optional, "Deal id, when readable"),
        column("reason", T::Text, Source::Unset, Required, "field: problem"),
        column("raw", T::Text, Source::Unset, Required, "The record as received"),
        column("quarantined_at", T::Timestamp, Source::Unset, Required, "When"),
    ]
};

impl Quarantined {
    /// Its values in `QUARANTINE` order.
    pub fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.sync_run_id.clone()),
            self.deal_id.clone().map_or(Value::Null, Value::Text),
            Value::Text(self.reason.clone()),
            Value::Text(self.raw.get().to_string()),
            Value::Timestamp(self.quarantined_at),
        ]
    }
}

/// One line of the run ledger (`_dealsync_runs`).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    /// `scheduled` (the default window) or `backfill`; only scheduled runs move the next default window.
    pub kind: &'static str,
    pub window_field: String,
    /// The window's bounds as RFC 3339 instants (date windows too), so the ledger can order them.
    pub window_start: String,
    pub window_end: String,
    /// The run's outcome word (`success`, `partial`, …).
    pub status: String,
    pub exit_code: u8,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub pages: u64,
    pub deals_fetched: u64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_unchanged: u64,
    pub not_closed_won: u64,
    pub quarantined: u64,
    pub error: Option<String>,
}

/// A run as the ledger tells it afterwards (`dealsync runs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PastRun {
    pub run_id: String,
    pub kind: String,
    pub window_field: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub status: String,
    pub exit_code: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Deals written (inserted or replaced by a newer copy).
    pub rows_written: i64,
    pub quarantined: i64,
    pub error: Option<String>,
}

impl PastRun {
    pub fn duration_seconds(&self) -> f64 {
        (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }

    pub fn is_good(&self) -> bool {
        RunRecord::is_good(&self.status)
    }
}

/// The columns of `_dealsync_runs`, in `RunRecord::values` order.
pub const LEDGER: [Entry; 17] = {
    use ColumnType as T;
    use Kept::{Optional, Required};
    const fn run(name: &'static str, ty: ColumnType, kept: Kept, description: &'static str) -> Entry {
        column(name, ty, Source::Unset, kept, description)
    }
    [
        run("run_id", T::Text, Required, "Run id"),
        run("kind", T::Text, Required, "scheduled or backfill"),
        run("window_field", T::Text, Required, "Modified_Time or Closing_Date"),
        run("window_start", T::Timestamp, Required, "Window start (inclusive)"),
        run("window_end", T::Timestamp, Required, "Window end (exclusive)"),
        run("status", T::Text, Required, "success, partial, unavailable, config_error, internal_error"),
        run("exit_code", T::Integer, Required, "Process exit code"),
        run("started_at", T::Timestamp, Required, "Run start"),
        run("finished_at", T::Timestamp, Required, "Run end"),
        run("pages", T::Integer, Optional, "Pages of records fetched"),
        run("deals_fetched", T::Integer, Optional, "Records received"),
        run("rows_inserted", T::Integer, Optional, "New deals"),
        run("rows_updated", T::Integer, Optional, "Deals replaced by a newer copy"),
        run("rows_unchanged", T::Integer, Optional, "Deals already up to date"),
        run("not_closed_won", T::Integer, Optional, "Records whose stage only contained Closed Won"),
        run("quarantined", T::Integer, Optional, "Records quarantined"),
        run("error", T::Text, Optional, "Why the run failed"),
    ]
};

impl RunRecord {
    /// Whether the next default window may start from this run's end.
    pub fn is_good(status: &str) -> bool {
        matches!(status, "success" | "partial")
    }

    /// Its values in `LEDGER` order. The window bounds keep the offsets they were given (RFC 3339 text).
    pub fn values(&self) -> Vec<Value> {
        let text = |s: &str| Value::Text(s.into());
        let n = |n: u64| Value::Integer(n as i64);
        vec![
            text(&self.run_id),
            text(self.kind),
            text(&self.window_field),
            text(&self.window_start),
            text(&self.window_end),
            text(&self.status),
            Value::Integer(i64::from(self.exit_code)),
            Value::Timestamp(self.started_at),
            Value::Timestamp(self.finished_at),
            n(self.pages),
            n(self.deals_fetched),
            n(self.rows_inserted),
            n(self.rows_updated),
            n(self.rows_unchanged),
            n(self.not_closed_won),
            n(self.quarantined),
            self.error.as_deref().map_or(Value::Null, text),
        ]
    }
}

/// For tests' assertions (`RawValue` has no `PartialEq`; its text is compared).
#[cfg(test)]
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Shared(a), Value::Shared(b)) => a == b,
            (Value::Integer(a), Value::Integer(b)) => a == b,
            (Value::Decimal(a), Value::Decimal(b)) => a == b,
            (Value::Boolean(a), Value::Boolean(b)) => a == b,
            (Value::Date(a), Value::Date(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            (Value::TextList(a), Value::TextList(b)) => a == b,
            (Value::Json(a), Value::Json(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_reads_the_standard_columns_it_means() {
        assert_eq!(STANDARD[col::DEAL_ID].name, "deal_id");
        assert_eq!(STANDARD[col::MODIFIED_TIME].name, "modified_time");
        assert_eq!(STANDARD[col::RAW].source, Source::Raw);
        let names: std::collections::HashSet<&str> = STANDARD.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), STANDARD.len(), "column names are unique");
    }

    #[test]
    fn each_sink_type_follows_from_the_table() {
        let standard = columns(&[]);
        let tags = standard.iter().find(|c| c.name == "tags").unwrap();
        assert_eq!(
            (tags.ty.bigquery(), tags.mode(), tags.sqlite_definition().as_str()),
            ("STRING", "REPEATED", "TEXT NOT NULL DEFAULT '[]'")
        );
        let key = &standard[col::DEAL_ID];
        assert_eq!((key.mode(), key.sqlite_definition().as_str()), ("REQUIRED", "TEXT NOT NULL PRIMARY KEY"));
        let won = standard.iter().find(|c| c.name == "is_closed_won").unwrap();
        assert_eq!((won.mode(), won.sqlite_definition().as_str()), ("NULLABLE", "INTEGER NOT NULL DEFAULT 1"));
        assert_eq!(standard_columns_of("Owner"), ["owner_id", "owner_name", "owner_email"]);
        assert_eq!(zoho_fields(&standard).len(), 18);
    }

    #[test]
    fn the_ledger_record_fills_every_ledger_column() {
        let r = RunRecord {
            run_id: "r".into(),
            kind: "scheduled",
            window_field: "Modified_Time".into(),
            window_start: "a".into(),
            window_end: "b".into(),
            status: "success".into(),
            exit_code: 0,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            pages: 1,
            deals_fetched: 2,
            rows_inserted: 3,
            rows_updated: 4,
            rows_unchanged: 5,
            not_closed_won: 6,
            quarantined: 7,
            error: None,
        };
        assert_eq!(r.values().len(), LEDGER.len());
        let serialized = serde_json::to_value(&r).unwrap();
        for c in LEDGER {
            assert!(serialized.get(c.name).is_some(), "{} is a field of RunRecord", c.name);
        }
    }
}
