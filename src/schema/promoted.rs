//! Promoted fields: Zoho fields (custom ones included) that an operator chose, in the config file's
//! `[columns]` table, to get typed columns of their own. They are columns like the standard ones (same reading,
//! same writers), after them, so a table only ever grows when one is added; `raw` keeps every field whether
//! promoted or not. The config file is validated in `config`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{value, IntoDeserializer};
use serde::{Deserialize, Serialize};

use super::{Column, Read, Source};

/// The type of a promoted field is how its value is read.
pub type FieldType = Read;

pub const TYPE_NAMES: &str =
    "text, integer, decimal, boolean, date, timestamp, text_list, lookup_id, lookup_name, json";

impl Read {
    /// A type as the config file names it (one of `TYPE_NAMES`).
    pub fn parse(s: &str) -> Option<Read> {
        Read::deserialize(IntoDeserializer::<value::Error>::into_deserializer(s)).ok()
    }

    /// The type dealsync suggests for a field from Zoho's metadata. Either key may be missing (some metadata
    /// lacks `json_type`); an unknown shape is kept as JSON rather than guessed.
    pub fn suggest(data_type: Option<&str>, json_type: Option<&str>) -> Read {
        match data_type.unwrap_or("") {
            "text" | "textarea" | "email" | "phone" | "website" | "url" | "picklist" | "autonumber" | "rich_text" => {
                Read::Text
            }
            "integer" | "bigint" | "long" => Read::Integer,
            "currency" | "double" | "decimal" | "percent" => Read::Decimal,
            "boolean" => Read::Boolean,
            "date" => Read::Date,
            "datetime" => Read::Timestamp,
            "multiselectpicklist" | "tags" => Read::TextList,
            "lookup" | "ownerlookup" | "userlookup" => Read::LookupId,
            _ => match json_type {
                Some("string") => Read::Text,
                Some("integer") => Read::Integer,
                Some("double") => Read::Decimal,
                Some("boolean") => Read::Boolean,
                _ => Read::Json,
            },
        }
    }
}

/// Its name in the config file.
impl fmt::Display for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serialize(f)
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
        Column {
            name: Cow::Owned(self.column.clone()),
            ty: self.ty.column_type(),
            source: Source::Zoho { field: Cow::Owned(self.field.clone()), read: self.ty },
            required: false,
            default: None,
            description: Cow::Owned(format!("{} ({}, promoted in the config file)", self.field, self.ty)),
        }
    }
}
