//! Promoted fields: Zoho fields (custom ones included) that an operator chose, in the config file's
//! `[columns]` table, to get typed columns of their own. They come after the standard columns, so a table only
//! ever grows when one is added; `raw` keeps every field whether promoted or not. A value that does not fit its
//! declared type quarantines the record with the field named, like any standard field.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use super::{date, decimal, err, format_instant, instant_field, integer, lookup_wire, present, shown, text, Column, FieldError, COLUMNS};
use crate::config::ConfigError;
use crate::json::Raw;

/// The column types a promoted field can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Any JSON string (numbers and booleans are kept as their text).
    Text,
    /// A whole number (JSON number or numeric string).
    Integer,
    /// An exact decimal (currency, double, percent), never a float.
    Decimal,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An ISO-8601 instant with offset, stored in UTC.
    Timestamp,
    /// A list of strings (multi-select picklists; objects contribute their `name`).
    TextList,
    /// The `id` of a lookup (`{"name","id"}`).
    LookupId,
    /// The `name` of a lookup.
    LookupName,
    /// Any JSON value, kept as JSON (subforms, multi-select lookups, …).
    Json,
}

pub const TYPE_NAMES: &str = "text, integer, decimal, boolean, date, timestamp, text_list, lookup_id, lookup_name, json";

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "text" => FieldType::Text,
            "integer" => FieldType::Integer,
            "decimal" => FieldType::Decimal,
            "boolean" => FieldType::Boolean,
            "date" => FieldType::Date,
            "timestamp" => FieldType::Timestamp,
            "text_list" => FieldType::TextList,
            "lookup_id" => FieldType::LookupId,
            "lookup_name" => FieldType::LookupName,
            "json" => FieldType::Json,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Timestamp => "timestamp",
            FieldType::TextList => "text_list",
            FieldType::LookupId => "lookup_id",
            FieldType::LookupName => "lookup_name",
            FieldType::Json => "json",
        }
    }

    /// BigQuery type and mode.
    pub fn bigquery(self) -> (&'static str, &'static str) {
        match self {
            FieldType::Text | FieldType::LookupId | FieldType::LookupName => ("STRING", "NULLABLE"),
            FieldType::Integer => ("INT64", "NULLABLE"),
            FieldType::Decimal => ("NUMERIC", "NULLABLE"),
            FieldType::Boolean => ("BOOL", "NULLABLE"),
            FieldType::Date => ("DATE", "NULLABLE"),
            FieldType::Timestamp => ("TIMESTAMP", "NULLABLE"),
            FieldType::TextList => ("STRING", "REPEATED"),
            FieldType::Json => ("JSON", "NULLABLE"),
        }
    }

    /// SQLite column type: decimals stay exact as text, lists and JSON are JSON text.
    pub fn sqlite(self) -> &'static str {
        match self {
            FieldType::Integer | FieldType::Boolean => "INTEGER",
            _ => "TEXT",
        }
    }

    /// The type dealsync suggests for a field from Zoho's metadata. Either key may be missing (some metadata
    /// lacks `json_type`); an unknown shape is kept as JSON rather than guessed.
    pub fn suggest(data_type: Option<&str>, json_type: Option<&str>) -> FieldType {
        match data_type.unwrap_or("") {
            "text" | "textarea" | "email" | "phone" | "website" | "url" | "picklist" | "autonumber" | "rich_text" => {
                FieldType::Text
            }
            "integer" | "bigint" | "long" => FieldType::Integer,
            "currency" | "double" | "decimal" | "percent" => FieldType::Decimal,
            "boolean" => FieldType::Boolean,
            "date" => FieldType::Date,
            "datetime" => FieldType::Timestamp,
            "multiselectpicklist" | "tags" => FieldType::TextList,
            "lookup" | "ownerlookup" | "userlookup" => FieldType::LookupId,
            _ => match json_type {
                Some("string") => FieldType::Text,
                Some("integer") => FieldType::Integer,
                Some("double") => FieldType::Decimal,
                Some("boolean") => FieldType::Boolean,
                _ => FieldType::Json,
            },
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One promoted field. Names live for the whole process (the configuration is read once), which lets them
/// appear in the `&'static` column list and field errors like the standard columns.
#[derive(Debug, Clone, Copy)]
pub struct Promoted {
    /// Zoho API name, e.g. `Region`.
    pub field: &'static str,
    /// Column name, e.g. `region`.
    pub column: &'static str,
    pub ty: FieldType,
}

impl Promoted {
    pub fn column_def(&self) -> Column {
        let (bq_type, mode) = self.ty.bigquery();
        Column { name: self.column, bq_type, mode, sqlite_type: self.ty.sqlite(), description: self.description() }
    }

    /// The column's description, made once per field and type for the whole process (like the names), however
    /// often a sink or `dealsync schema` builds the column list.
    fn description(&self) -> &'static str {
        static MADE: std::sync::Mutex<Vec<(&'static str, FieldType, &'static str)>> = std::sync::Mutex::new(Vec::new());
        let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((.., d)) = made.iter().find(|(f, t, _)| *f == self.field && *t == self.ty) {
            return d;
        }
        let d: &'static str = Box::leak(format!("{} ({}, promoted in the config file)", self.field, self.ty).into_boxed_str());
        made.push((self.field, self.ty, d));
        d
    }
}

/// `[columns]` in the config file: `region = { field = "Region", type = "text" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    pub field: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// Validates the `[columns]` table once. Errors name the entry (`columns.region.type`).
pub fn from_config(columns: &BTreeMap<String, ColumnFile>) -> Result<&'static [Promoted], ConfigError> {
    if columns.is_empty() {
        return Ok(&[]);
    }
    let mut out = Vec::with_capacity(columns.len());
    for (column, c) in columns {
        let at = |key: &str| format!("columns.{column}{key} (config file)");
        let valid_name = column.len() <= 128
            && column.starts_with(|ch: char| ch.is_ascii_lowercase())
            && column.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            return Err(ConfigError::new(at(""), "a column name is lowercase letters, digits and _, starting with a letter"));
        }
        if COLUMNS.iter().any(|s| s.name == column) {
            return Err(ConfigError::new(at(""), format!("{column} is a standard column already; pick another name")));
        }
        let field = c.field.trim();
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            return Err(ConfigError::new(
                at(".field"),
                format!("`{}` is not a Zoho API name (letters, digits, _ and $; see `dealsync fields`)", c.field),
            ));
        }
        let ty = FieldType::parse(c.ty.trim())
            .ok_or_else(|| ConfigError::new(at(".type"), format!("`{}` is not one of {TYPE_NAMES}", c.ty)))?;
        out.push(Promoted { field: Box::leak(field.to_string().into_boxed_str()), column: Box::leak(column.clone().into_boxed_str()), ty });
    }
    // A COQL page (the fallback for windows too dense to search) selects at most 50 fields.
    let coql = crate::zoho::criteria::COQL_FIELDS;
    let mut extra: Vec<&str> = out.iter().map(|p| p.field).filter(|f| !coql.contains(f)).collect();
    extra.sort_unstable();
    extra.dedup();
    if coql.len() + extra.len() > 50 {
        return Err(ConfigError::new(
            "columns (config file)",
            format!("{} fields promoted; at most {} beyond the standard ones fit a COQL query (50 fields)", extra.len(), 50 - coql.len()),
        ));
    }
    Ok(Box::leak(out.into_boxed_slice()))
}

/// The standard columns followed by the promoted ones.
pub fn table_columns(promoted: &[Promoted]) -> Vec<Column> {
    COLUMNS.iter().copied().chain(promoted.iter().map(Promoted::column_def)).collect()
}

/// A promoted field's typed value.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Text(super::Text),
    Integer(i64),
    Decimal(Decimal),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    TextList(Vec<super::Text>),
    Json(Raw),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Text(a), Value::Text(b)) => a == b,
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

impl Value {
    /// The value as SQL text or number for SQLite.
    pub fn to_sql(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            Value::Null => V::Null,
            Value::Text(s) => V::Text(s.to_string()),
            Value::Integer(i) => V::Integer(*i),
            Value::Decimal(d) => V::Text(super::decimal_text(d).as_str().to_string()),
            Value::Boolean(b) => V::Integer(*b as i64),
            Value::Date(d) => V::Text(super::date_text(*d).as_str().to_string()),
            Value::Timestamp(t) => V::Text(format_instant(t)),
            Value::TextList(l) => V::Text(serde_json::to_string(l).unwrap_or_else(|_| "[]".into())),
            Value::Json(j) => V::Text(j.get().to_string()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Text(t) => s.serialize_str(t),
            Value::Integer(i) => s.serialize_i64(*i),
            // As text, so that no JSON reader turns it into a float.
            Value::Decimal(d) => super::decimal_text(d).serialize(s),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Date(d) => super::date_text(*d).serialize(s),
            Value::Timestamp(t) => super::instant_text(t).serialize(s),
            Value::TextList(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for item in l {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Json(j) => j.serialize(s),
        }
    }
}

/// The promoted values of one row, serialized as `column: value` entries beside the standard columns.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub columns: &'static [Promoted],
    pub values: Vec<Value>,
}

impl Serialize for Extras {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for (p, v) in self.columns.iter().zip(&self.values) {
            map.serialize_entry(p.column, v)?;
        }
        map.end()
    }
}

/// Reads one promoted field from its value's JSON text, as the page scan checked it.
pub(crate) fn read(p: &Promoted, raw: Option<&str>) -> Result<Value, FieldError> {
    let f = p.field;
    let Some(r) = present(raw) else { return Ok(Value::Null) };
    let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
    Ok(match p.ty {
        FieldType::Text => match r.as_bytes().first() {
            Some(b'"') => opt(text(f, raw)?.map(Value::Text)),
            Some(b'{' | b'[') => return Err(err(f, format!("expected text, got {}", shown(r)))),
            _ => Value::Text(r.into()),
        },
        FieldType::Integer => opt(integer(f, raw)?.map(Value::Integer)),
        FieldType::Decimal => opt(decimal(f, raw)?.map(Value::Decimal)),
        FieldType::Boolean => match r {
            "true" | "\"true\"" => Value::Boolean(true),
            "false" | "\"false\"" => Value::Boolean(false),
            "\"\"" => Value::Null,
            _ => return Err(err(f, format!("expected true or false, got {}", shown(r)))),
        },
        FieldType::Date => opt(date(f, raw)?.map(Value::Date)),
        FieldType::Timestamp => opt(instant_field(f, raw)?.map(Value::Timestamp)),
        FieldType::TextList => Value::TextList(text_list(f, r)?),
        FieldType::LookupId => match lookup_wire(f, raw)? {
            Some(l) => opt(super::lookup_id(f, l.id)?.map(Value::Text)),
            None => Value::Null,
        },
        FieldType::LookupName => match lookup_wire(f, raw)? {
            Some(l) => opt(text(f, l.name)?.map(Value::Text)),
            None => Value::Null,
        },
        FieldType::Json => Value::Json(Raw::checked(r)),
    })
}

/// Strings, or objects with a `name` (tags, multi-select lookups); a lone string counts as a one-item list.
fn text_list(f: &'static str, r: &str) -> Result<Vec<super::Text>, FieldError> {
    if r.starts_with('"') {
        return Ok(text(f, Some(r))?.into_iter().filter(|s| !s.is_empty()).collect());
    }
    super::names(f, r, "text")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(field: &'static str, ty: FieldType) -> Promoted {
        Promoted { field, column: "c", ty }
    }

    #[test]
    fn a_promoted_columns_description_is_made_once_however_often_the_columns_are_listed() {
        let (a, b) = (p("Region_X", FieldType::Text).column_def(), p("Region_X", FieldType::Text).column_def());
        assert_eq!(a.description, "Region_X (text, promoted in the config file)");
        assert!(std::ptr::eq(a.description, b.description), "the same text, not a second copy");
        let other = p("Region_X", FieldType::Integer).column_def();
        assert!(other.description.contains("integer"), "{}", other.description);
    }

    fn read_json(ty: FieldType, json: &str) -> Result<Value, FieldError> {
        crate::json::validate(json).unwrap();
        read(&p("F", ty), Some(json))
    }

    #[test]
    fn each_type_reads_what_zoho_sends() {
        use FieldType as T;
        assert_eq!(read_json(T::Text, "\"Gold\"").unwrap(), Value::Text("Gold".into()));
        assert_eq!(read_json(T::Text, "42").unwrap(), Value::Text("42".into()));
        assert_eq!(read_json(T::Integer, "\"17\"").unwrap(), Value::Integer(17));
        assert_eq!(read_json(T::Decimal, "57200.5").unwrap(), Value::Decimal("57200.5".parse().unwrap()));
        assert_eq!(read_json(T::Boolean, "true").unwrap(), Value::Boolean(true));
        assert_eq!(read_json(T::Date, "\"2027-01-31\"").unwrap(), Value::Date(NaiveDate::from_ymd_opt(2027, 1, 31).unwrap()));
        assert_eq!(
            read_json(T::Timestamp, "\"2026-11-27T10:00:00+05:30\"").unwrap(),
            Value::Timestamp("2026-11-27T04:30:00Z".parse().unwrap())
        );
        assert_eq!(read_json(T::TextList, "[\"a\",{\"name\":\"b\",\"id\":\"1\"}]").unwrap(), Value::TextList(vec!["a".into(), "b".into()]));
        assert_eq!(read_json(T::LookupId, "{\"name\":\"Acme\",\"id\":\"123\"}").unwrap(), Value::Text("123".into()));
        assert_eq!(read_json(T::LookupName, "{\"name\":\"Acme\",\"id\":\"123\"}").unwrap(), Value::Text("Acme".into()));
        assert_eq!(serde_json::to_string(&read_json(T::Json, "{\"a\": [1]}").unwrap()).unwrap(), "{\"a\": [1]}");
        assert_eq!(read(&p("F", T::Integer), None).unwrap(), Value::Null);
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_the_field() {
        use FieldType as T;
        for (ty, json) in [(T::Integer, "1.5"), (T::Decimal, "\"abc\""), (T::Boolean, "1"), (T::Date, "\"31/01/2027\""),
            (T::Text, "{\"a\":1}"), (T::LookupId, "\"x\""), (T::TextList, "{}")]
        {
            let e = read_json(ty, json).unwrap_err();
            assert_eq!(e.field, "F", "{ty} {json}");
        }
    }

    #[test]
    fn metadata_without_json_type_or_data_type_still_gets_a_type() {
        assert_eq!(FieldType::suggest(Some("picklist"), None), FieldType::Text);
        assert_eq!(FieldType::suggest(Some("currency"), Some("double")), FieldType::Decimal);
        assert_eq!(FieldType::suggest(Some("formula"), Some("double")), FieldType::Decimal);
        assert_eq!(FieldType::suggest(Some("formula"), None), FieldType::Json);
        assert_eq!(FieldType::suggest(None, None), FieldType::Json);
        assert_eq!(FieldType::suggest(Some("subform"), Some("jsonarray")), FieldType::Json);
    }

    #[test]
    fn the_config_table_is_validated_entry_by_entry() {
        let parse = |toml_text: &str| {
            let t: BTreeMap<String, ColumnFile> = toml::from_str(toml_text).unwrap();
            from_config(&t)
        };
        let ok = parse("region = { field = \"Region\", type = \"text\" }\nseats = { field = \"Seats\", type = \"integer\" }").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!((ok[0].column, ok[0].field, ok[0].ty), ("region", "Region", FieldType::Text));
        assert_eq!(parse("Region = { field = \"Region\", type = \"text\" }").unwrap_err().variable, "columns.Region (config file)");
        assert_eq!(parse("amount = { field = \"Amount\", type = \"decimal\" }").unwrap_err().variable, "columns.amount (config file)");
        let e = parse("region = { field = \"Region\", type = \"string\" }").unwrap_err();
        assert_eq!(e.variable, "columns.region.type (config file)");
        assert!(e.problem.contains("text_list"), "{e}");
        assert_eq!(parse("region = { field = \"Re gion\", type = \"text\" }").unwrap_err().variable, "columns.region.field (config file)");
    }
}
