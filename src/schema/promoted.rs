//! Promoted fields: Zoho fields (custom ones included) that an operator chose, in the config file's
//! `[columns]` table, to get typed columns of their own. They are columns like the standard ones (same reading,
//! same writers), after them, so a table only ever grows when one is added; `raw` keeps every field whether
//! promoted or not. The config file is validated in `config`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{value, IntoDeserializer};
use serde::{Deserialize, Serialize};

use super::{Column, FieldType, Source};

pub const TYPE_NAMES: &str =
    "text, integer, decimal, boolean, date, timestamp, text_list, lookup_id, lookup_name, json";

impl FieldType {
    /// A type as the config file names it (one of `TYPE_NAMES`).
    pub fn parse(s: &str) -> Option<FieldType> {
        FieldType::deserialize(IntoDeserializer::<value::Error>::into_deserializer(s)).ok()
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

/// Its name in the config file.
impl fmt::Display for FieldType {
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
            ty: self.ty,
            source: Source::Zoho(Cow::Owned(self.field.clone())),
            required: false,
            default: None,
            description: Cow::Owned(format!("{} ({}, promoted in the config file)", self.field, self.ty)),
        }
    }
}
