//! The one table of what dealsync stores and where each value comes from; every list of columns is derived from it
//! (the target table, BigQuery's schema, SQLite's DDL, the fields read from Zoho, `dealsync fields`, the sinks'
//! writers). A standard Zoho field is one entry in `STANDARD` (see CONTRIBUTING.md); promoted fields follow the
//! standard ones. The run ledger's and the quarantine's columns are defined here too.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::de::{value, IntoDeserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

// Short names for the column tables below (this module uses no `Default` trait).
use FieldType as T;
use Kept::{Default, Optional, Required};

/// Zoho's `equals` on text matches like *contains*, so stages are checked exactly.
pub const CLOSED_WON: &str = "Closed Won";

/// BigQuery NUMERIC keeps 9 digits after the point; more would be silently rounded there, so they are refused.
pub const MAX_SCALE: u32 = 9;

/// Instants are written the same way everywhere: RFC 3339, UTC, whole seconds (Zoho's precision). The fixed
/// width makes the text sort like the instant, so SQLite can index and range-scan it.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn instant<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_instant(t))
}

/// Sorts numeric ids by value (shorter first), others as text, so that a warehouse's and Zoho's lists sort alike.
pub fn sort_ids(ids: &mut [String]) {
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
}

/// A column's type in every sink, and how its Zoho value is read. A promoted field names one in snake case in the
/// config file (`id` and `lookup_email` serve standard columns only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A JSON string (numbers and booleans are kept as their text).
    Text,
    /// A Zoho id: a string of digits or a JSON integer.
    #[serde(skip_deserializing)]
    Id,
    /// A whole number (JSON number or numeric string).
    Integer,
    /// An exact decimal (currency, double, percent) from a JSON number or numeric string, never a float: NUMERIC
    /// in BigQuery, text in SQLite.
    Decimal,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An ISO-8601 instant with offset, stored in UTC.
    Timestamp,
    /// A list of strings, or of objects with a `name` (tags, multi-select picklists): `ARRAY<STRING>` in
    /// BigQuery, a JSON array in SQLite.
    TextList,
    /// The `id`, `name` or `email` of a lookup (`{"name","id"}`; a user also has `email`), as text.
    LookupId,
    LookupName,
    #[serde(skip_deserializing)]
    LookupEmail,
    /// Any JSON value, kept as JSON (subforms, multi-select lookups, …).
    Json,
}

impl FieldType {
    /// BigQuery's type (a list is a REPEATED STRING).
    pub fn bigquery(self) -> &'static str {
        match self {
            FieldType::Integer => "INT64",
            FieldType::Decimal => "NUMERIC",
            FieldType::Boolean => "BOOL",
            FieldType::Date => "DATE",
            FieldType::Timestamp => "TIMESTAMP",
            FieldType::Json => "JSON",
            _ => "STRING",
        }
    }

    /// SQLite's type: integers and booleans as INTEGER, everything else as exact text.
    pub fn sqlite(self) -> &'static str {
        match self {
            FieldType::Integer | FieldType::Boolean => "INTEGER",
            _ => "TEXT",
        }
    }

    /// A type as the config file names it (one of `TYPE_NAMES`).
    pub fn parse(s: &str) -> Option<FieldType> {
        FieldType::deserialize(IntoDeserializer::<value::Error>::into_deserializer(s)).ok()
    }

    /// The type dealsync suggests for a field from Zoho's metadata. Either key may be missing (some metadata
    /// lacks `json_type`); an unknown shape is kept as JSON rather than guessed.
    pub fn suggest(data_type: Option<&str>, json_type: Option<&str>) -> FieldType {
        match data_type.unwrap_or("") {
            "text" | "textarea" | "rich_text" | "email" | "phone" | "website" | "url" => T::Text,
            "picklist" | "autonumber" => T::Text,
            "integer" | "bigint" | "long" => T::Integer,
            "currency" | "double" | "decimal" | "percent" => T::Decimal,
            "boolean" => T::Boolean,
            "date" => T::Date,
            "datetime" => T::Timestamp,
            "multiselectpicklist" | "tags" => T::TextList,
            "lookup" | "ownerlookup" | "userlookup" => T::LookupId,
            // Zoho's json_type: string, integer, double, boolean, or a JSON shape.
            _ => match json_type {
                Some("string") => T::Text,
                Some("integer") => T::Integer,
                Some("double") => T::Decimal,
                Some("boolean") => T::Boolean,
                _ => T::Json,
            },
        }
    }
}

/// The types a promoted field may have, as the config file names them.
pub const TYPE_NAMES: &str =
    "text, integer, decimal, boolean, date, timestamp, text_list, lookup_id, lookup_name, json";

/// Its name in the config file.
impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(f)
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A field of the Zoho record, by its API name.
    Zoho(Cow<'static, str>),
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

#[derive(Debug, Clone)]
pub struct Column {
    pub name: Cow<'static, str>,
    pub ty: FieldType,
    pub source: Source,
    pub kept: Kept,
    pub description: Cow<'static, str>,
}

impl Column {
    /// BigQuery's mode.
    pub fn mode(&self) -> &'static str {
        match (self.ty, self.kept) {
            (T::TextList, _) => "REPEATED",
            // `raw` has been NULLABLE in BigQuery since the first release; new tables match the existing ones.
            (_, Required) if self.source != Source::Raw => "REQUIRED",
            _ => "NULLABLE",
        }
    }

    /// The column's SQLite definition after its name, in the target table (where `deal_id` is the key).
    pub fn sqlite_definition(&self) -> String {
        self.sqlite_definition_in(self.name == KEY)
    }

    /// As above, as its table's key or not (the quarantine's `deal_id` is not: it keeps a row per deal and run).
    pub fn sqlite_definition_in(&self, primary_key: bool) -> String {
        let not_null = if self.kept == Kept::Optional { "" } else { " NOT NULL" };
        let key = if primary_key { " PRIMARY KEY" } else { "" };
        let default = if let Kept::Default(sql) = self.kept { format!(" DEFAULT {sql}") } else { String::new() };
        format!("{}{not_null}{key}{default}", self.ty.sqlite())
    }
}

/// BigQuery's JSON schema entry: `{"name", "type", "mode", "description"}`.
impl Serialize for Column {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map([
            ("name", self.name.as_ref()),
            ("type", self.ty.bigquery()),
            ("mode", self.mode()),
            ("description", self.description.as_ref()),
        ])
    }
}

/// How a column is kept: `Optional` may be empty; `Required` never is (BigQuery REQUIRED, SQLite NOT NULL);
/// `Default(sql)` is never empty, and rows written before the column existed hold `sql` (SQLite's `NOT NULL
/// DEFAULT`; NULLABLE in BigQuery, where older rows read NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Optional,
    Required,
    Default(&'static str),
}

const fn column(name: &'static str, ty: FieldType, source: Source, kept: Kept, description: &'static str) -> Column {
    Column { name: Cow::Borrowed(name), ty, source, kept, description: Cow::Borrowed(description) }
}

const fn zoho(name: &'static str, field: &'static str, ty: FieldType, kept: Kept, description: &'static str) -> Column {
    column(name, ty, Source::Zoho(Cow::Borrowed(field)), kept, description)
}

/// A column of a table dealsync keeps for itself (the ledger, the quarantine): no Zoho field fills it.
const fn own(name: &'static str, ty: FieldType, kept: Kept, description: &'static str) -> Column {
    column(name, ty, Source::Unset, kept, description)
}

/// The column rows are keyed by.
pub const KEY: &str = "deal_id";

/// The standard columns of `closed_won_deals`, in order. Promoted columns follow them.
pub static STANDARD: [Column; 28] = [
    zoho("deal_id", "id", T::Id, Required, "Zoho record id of the deal"),
    zoho("deal_name", "Deal_Name", T::Text, Optional, "Deal_Name"),
    zoho(
        "stage",
        "Stage",
        T::Text,
        Required,
        "Stage: Closed Won when the deal was synced; its new stage once reopened or lost (see is_closed_won)",
    ),
    zoho("amount", "Amount", T::Decimal, Optional, "Amount in the deal's currency, exact decimal"),
    zoho("expected_revenue", "Expected_Revenue", T::Decimal, Optional, "Expected_Revenue in the deal's currency"),
    zoho("exchange_rate", "Exchange_Rate", T::Decimal, Optional, "Exchange_Rate of the deal's currency as delivered"),
    zoho("currency", "Currency", T::Text, Optional, "ISO currency code of amount and expected_revenue"),
    zoho("probability", "Probability", T::Integer, Optional, "Probability in percent"),
    zoho("closing_date", "Closing_Date", T::Date, Optional, "Closing_Date (YYYY-MM-DD)"),
    zoho("account_id", "Account_Name", T::LookupId, Optional, "Account_Name.id"),
    zoho("account_name", "Account_Name", T::LookupName, Optional, "Account_Name.name"),
    zoho("contact_id", "Contact_Name", T::LookupId, Optional, "Contact_Name.id"),
    zoho("contact_name", "Contact_Name", T::LookupName, Optional, "Contact_Name.name"),
    zoho("owner_id", "Owner", T::LookupId, Optional, "Owner.id"),
    zoho("owner_name", "Owner", T::LookupName, Optional, "Owner.name"),
    zoho("owner_email", "Owner", T::LookupEmail, Optional, "Owner.email"),
    zoho("pipeline", "Pipeline", T::Text, Optional, "Pipeline"),
    zoho("type", "Type", T::Text, Optional, "Type"),
    zoho("lead_source", "Lead_Source", T::Text, Optional, "Lead_Source"),
    zoho("tags", "Tag", T::TextList, Default("'[]'"), "Tag names (a JSON array in SQLite)"),
    zoho("created_time", "Created_Time", T::Timestamp, Optional, "Created_Time in UTC"),
    zoho("modified_time", "Modified_Time", T::Timestamp, Required, "Modified_Time in UTC; the newer copy wins"),
    column("raw", T::Json, Source::Raw, Required, "The complete record as received, custom fields included"),
    column("sync_run_id", T::Text, Source::RunId, Required, "Run that last wrote the row"),
    column("synced_at", T::Timestamp, Source::SyncedAt, Required, "When that run started"),
    column("is_closed_won", T::Boolean, Source::Flag(true), Default("1"), "False once the deal was reopened or lost"),
    column("is_deleted", T::Boolean, Source::Flag(false), Default("0"), "True once the deal was deleted in Zoho"),
    column("deleted_time", T::Timestamp, Source::Unset, Optional, "When it was deleted in Zoho"),
];

/// Positions in `STANDARD` of the columns the code itself reads (a unit test checks each name).
pub mod col {
    pub const DEAL_ID: usize = 0;
    pub const STAGE: usize = 2;
    pub const AMOUNT: usize = 3;
    pub const CURRENCY: usize = 6;
    pub const CLOSING_DATE: usize = 8;
    pub const MODIFIED_TIME: usize = 21;
    pub const RAW: usize = 22;
}

/// A Zoho field (custom ones included) the config file's `[columns]` gives a typed column of its own, after the
/// standard ones so that a table only ever grows; `raw` keeps every field whether promoted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// Zoho API name, e.g. `Region`.
    pub field: String,
    /// Column name, e.g. `region`.
    pub column: String,
    pub ty: FieldType,
}

impl Promoted {
    pub fn column(&self) -> Column {
        Column {
            name: Cow::Owned(self.column.clone()),
            ty: self.ty,
            source: Source::Zoho(Cow::Owned(self.field.clone())),
            kept: Kept::Optional,
            description: Cow::Owned(format!("{} ({}, promoted in the config file)", self.field, self.ty)),
        }
    }
}

pub fn columns(promoted: &[Promoted]) -> Vec<Column> {
    STANDARD.iter().cloned().chain(promoted.iter().map(Promoted::column)).collect()
}

/// The standard columns a Zoho field fills (for `dealsync fields`).
pub fn standard_columns_of(field: &str) -> Vec<&'static str> {
    STANDARD.iter().filter(|c| matches!(&c.source, Source::Zoho(f) if f == field)).map(|c| c.name.as_ref()).collect()
}

/// One value of a row. As JSON: decimals as strings in their shortest exact form (no reader turns them into
/// floats), dates as `YYYY-MM-DD`, instants as `format_instant` writes them, JSON as itself.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Text(String),
    /// Text every row of a run shares (its id), held once.
    Shared(Arc<str>),
    Integer(i64),
    Decimal(#[serde(serialize_with = "shortest")] Decimal),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(#[serde(serialize_with = "instant")] DateTime<Utc>),
    TextList(Vec<String>),
    Json(Box<RawValue>),
}

fn shortest<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&d.normalize())
}

/// One deal, ready for any sink: a value per column of the run's table, in column order.
#[derive(Debug, Clone)]
pub struct DealRow {
    pub values: Vec<Value>,
}

impl DealRow {
    pub fn deal_id(&self) -> &str {
        let Value::Text(id) = &self.values[col::DEAL_ID] else { unreachable!("a row has a deal id") };
        id
    }

    pub fn modified_time(&self) -> DateTime<Utc> {
        let Value::Timestamp(t) = self.values[col::MODIFIED_TIME] else { unreachable!("a row has a modified time") };
        t
    }

    pub fn closing_date(&self) -> Option<NaiveDate> {
        let Value::Date(d) = self.values[col::CLOSING_DATE] else { return None };
        Some(d)
    }

    pub fn amount(&self) -> Option<Decimal> {
        let Value::Decimal(d) = self.values[col::AMOUNT] else { return None };
        Some(d)
    }

    pub fn currency(&self) -> Option<&str> {
        let Value::Text(currency) = &self.values[col::CURRENCY] else { return None };
        Some(currency)
    }

    pub fn raw(&self) -> &RawValue {
        let Value::Json(raw) = &self.values[col::RAW] else { unreachable!("a row keeps its record") };
        raw
    }

    /// Appends the row as one line of JSON: every column by name, `raw` last (the long one, for a reader's eye)
    /// and as the record itself.
    pub fn write_json_line(&self, columns: &[Column], buf: &mut Vec<u8>) {
        let members = columns.iter().zip(&self.values).filter(|(c, _)| c.source != Source::Raw);
        write_members(members.chain([(&columns[col::RAW], &self.values[col::RAW])]), buf);
        buf.push(b'\n');
    }
}

/// Appends `{"column": value, …}` for values in column order.
pub fn write_object(columns: &[Column], values: &[Value], buf: &mut Vec<u8>) {
    write_members(columns.iter().zip(values), buf);
}

fn write_members<'a>(members: impl Iterator<Item = (&'a Column, &'a Value)>, buf: &mut Vec<u8>) {
    serde_json::Serializer::new(buf).collect_map(members.map(|(c, v)| (&c.name, v))).expect("values serialize");
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

/// The columns of `_dealsync_quarantine`.
pub static QUARANTINE: [Column; 5] = [
    own("run_id", T::Text, Required, "Run that met the record"),
    own("deal_id", T::Text, Optional, "Deal id, when readable"),
    own("reason", T::Text, Required, "field: problem"),
    own("raw", T::Text, Required, "The record as received"),
    own("quarantined_at", T::Timestamp, Required, "When"),
];

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
    #[serde(serialize_with = "instant")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "instant")]
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
}

/// The columns of `_dealsync_runs`, named like the fields of `RunRecord`.
pub static LEDGER: [Column; 17] = [
    own("run_id", T::Text, Required, "Run id"),
    own("kind", T::Text, Required, "scheduled or backfill"),
    own("window_field", T::Text, Required, "Modified_Time or Closing_Date"),
    own("window_start", T::Timestamp, Required, "Window start (inclusive)"),
    own("window_end", T::Timestamp, Required, "Window end (exclusive)"),
    own("status", T::Text, Required, "success, partial, unavailable, config_error, internal_error"),
    own("exit_code", T::Integer, Required, "Process exit code"),
    own("started_at", T::Timestamp, Required, "Run start"),
    own("finished_at", T::Timestamp, Required, "Run end"),
    own("pages", T::Integer, Optional, "Pages of records fetched"),
    own("deals_fetched", T::Integer, Optional, "Records received"),
    own("rows_inserted", T::Integer, Optional, "New deals"),
    own("rows_updated", T::Integer, Optional, "Deals replaced by a newer copy"),
    own("rows_unchanged", T::Integer, Optional, "Deals already up to date"),
    own("not_closed_won", T::Integer, Optional, "Records whose stage only contained Closed Won"),
    own("quarantined", T::Integer, Optional, "Records quarantined"),
    own("error", T::Text, Optional, "Why the run failed"),
];

impl RunRecord {
    /// Its values in `LEDGER` order, each column the field of its name (window bounds as given, RFC 3339 text).
    pub fn values(&self) -> Vec<Value> {
        let fields = serde_json::to_value(self).expect("a run record serializes");
        let value = |c: &Column| match &fields[c.name.as_ref()] {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Number(n) => n.as_i64().map_or(Value::Null, Value::Integer),
            _ => Value::Null,
        };
        LEDGER.iter().map(value).collect()
    }
}

#[cfg(test)]
/// For tests' assertions (`RawValue` has no `PartialEq`; its text is compared).
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
impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            Value::Shared(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
impl DealRow {
    /// The value of the column called `name` among `columns` (the run's).
    pub fn get(&self, columns: &[Column], name: &str) -> Option<&Value> {
        columns.iter().position(|c| c.name == name).and_then(|i| self.values.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_reads_the_standard_columns_it_means() {
        let named = [
            (col::DEAL_ID, "deal_id"),
            (col::STAGE, "stage"),
            (col::AMOUNT, "amount"),
            (col::CURRENCY, "currency"),
            (col::CLOSING_DATE, "closing_date"),
            (col::MODIFIED_TIME, "modified_time"),
            (col::RAW, "raw"),
        ];
        for (i, name) in named {
            assert_eq!(STANDARD[i].name, name);
        }
        assert_eq!(STANDARD[col::RAW].source, Source::Raw);
        let names: std::collections::HashSet<&str> = STANDARD.iter().map(|c| c.name.as_ref()).collect();
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
        let fields: std::collections::HashSet<_> =
            standard.iter().filter_map(|c| if let Source::Zoho(f) = &c.source { Some(f) } else { None }).collect();
        assert_eq!(fields.len(), 18);
    }

    #[test]
    fn promoted_types_are_named_as_in_the_config_file() {
        for name in TYPE_NAMES.split(", ") {
            assert_eq!(FieldType::parse(name).map(|t| t.to_string()).as_deref(), Some(name));
        }
        assert_eq!(FieldType::parse("id"), None, "ids and emails serve standard columns only");
        assert_eq!(FieldType::parse("lookup_email"), None);
        assert_eq!(FieldType::parse("Text"), None);
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
        for c in &LEDGER {
            assert!(serialized.get(c.name.as_ref()).is_some(), "{} is a field of RunRecord", c.name);
        }
    }
}
