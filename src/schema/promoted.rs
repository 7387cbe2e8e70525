//! Promoted fields: Zoho fields (custom ones included) that an operator chose, in the config file's
//! `[columns]` table, to get typed columns of their own. They are columns like the standard ones (same reading,
//! same writers), after them, so a table only ever grows when one is added; `raw` keeps every field whether
//! promoted or not. The config file is validated in `config`.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use super::{Column, Read, Source};

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

pub const TYPE_NAMES: &str =
    "text, integer, decimal, boolean, date, timestamp, text_list, lookup_id, lookup_name, json";

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

    /// How a field promoted with this type is read.
    pub fn read(self) -> Read {
        match self {
            FieldType::Text => Read::Text,
            FieldType::Integer => Read::Integer,
            FieldType::Decimal => Read::Decimal,
            FieldType::Boolean => Read::Boolean,
            FieldType::Date => Read::Date,
            FieldType::Timestamp => Read::Timestamp,
            FieldType::TextList => Read::Names,
            FieldType::LookupId => Read::LookupId,
            FieldType::LookupName => Read::LookupName,
            FieldType::Json => Read::Json,
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

/// One promoted field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// Zoho API name, e.g. `Region`.
    pub field: String,
    /// Column name, e.g. `region`.
    pub column: String,
    pub ty: FieldType,
}

impl Promoted {
    /// Its column, after the standard ones.
    pub fn column(&self) -> Column {
        let read = self.ty.read();
        Column {
            name: Cow::Owned(self.column.clone()),
            ty: read.column_type(),
            source: Source::Zoho { field: Cow::Owned(self.field.clone()), read },
            required: false,
            default: None,
            description: Cow::Owned(format!("{} ({}, promoted in the config file)", self.field, self.ty)),
        }
    }
}
