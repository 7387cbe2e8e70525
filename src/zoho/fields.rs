//! Fields metadata (`GET /crm/v8/settings/fields?module=Deals`): what `dealsync fields` lists and what
//! `dealsync check` compares the promoted columns with. Real metadata is not always complete (some fields
//! lack `json_type` or `length`), so every key but `api_name` is optional and nothing here fails on a gap.

use serde::{Deserialize, Serialize};

use super::{Call, ZohoClient, ZohoError};
use crate::schema::FieldType;

/// One field as the metadata describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FieldMeta {
    pub api_name: String,
    pub display_label: Option<String>,
    pub field_label: Option<String>,
    pub data_type: Option<String>,
    pub json_type: Option<String>,
    #[serde(default)]
    pub custom_field: bool,
    pub length: Option<u64>,
}

impl FieldMeta {
    pub fn label(&self) -> Option<&str> {
        self.display_label.as_deref().or(self.field_label.as_deref())
    }

    pub fn suggested_type(&self) -> FieldType {
        FieldType::suggest(self.data_type.as_deref(), self.json_type.as_deref())
    }
}

#[derive(Deserialize)]
struct FieldsBody {
    fields: Option<Vec<serde_json::Value>>,
}

/// Parses the answer; a field without `api_name` is skipped (and counted), never fatal.
pub fn parse_fields(what: &str, status: u16, body: &str) -> Result<(Vec<FieldMeta>, usize), ZohoError> {
    let parsed: FieldsBody =
        serde_json::from_str(body).map_err(|e| ZohoError::invalid(what, status, format!("not valid JSON ({e})")))?;
    let list = parsed.fields.ok_or_else(|| ZohoError::invalid(what, status, "the answer has no `fields` array"))?;
    let total = list.len();
    let read = list.into_iter().filter_map(|v| serde_json::from_value::<FieldMeta>(v).ok());
    let fields: Vec<FieldMeta> = read.filter(|f| !f.api_name.is_empty()).collect();
    let skipped = total - fields.len();
    Ok((fields, skipped))
}

impl ZohoClient {
    /// Every field of `module`. An empty answer (HTTP 204, which Zoho sends when the token may not read the
    /// metadata) is an error naming the scope, not an empty list.
    pub async fn fields(&self, module: &str) -> Result<Vec<FieldMeta>, ZohoError> {
        let scope = "the refresh token needs the ZohoCRM.settings.fields.READ scope";
        let parse = |what: &str, status, body: Option<String>| match body {
            // Not retried: the same token gets the same empty answer.
            None => {
                let message = format!("no fields metadata for {module} (empty answer); {scope}");
                Err(ZohoError::api(what, status, "NO_FIELDS_METADATA", message))
            }
            Some(body) => parse_fields(what, status, &body),
        };
        let call = Call { path: "crm/v8/settings/fields", query: &[("module", module)], ..Default::default() };
        let (fields, skipped) = self.execute(call, &parse).await?;
        if skipped > 0 {
            tracing::warn!(
                event = "fields_skipped",
                skipped,
                "{skipped} field entries without an api_name were skipped"
            );
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_with_missing_keys_is_read_not_refused() {
        let body = r#"{"fields":[
            {"api_name":"Amount","display_label":"Amount","field_label":"Amount","data_type":"currency","json_type":"double","custom_field":false,"length":16},
            {"api_name":"Partner_Tier","field_label":"Partner Tier","data_type":"picklist","custom_field":true},
            {"api_name":"Odd"},
            {"display_label":"no api name"}
        ]}"#;
        let (fields, skipped) = parse_fields("fields", 200, body).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[1].label(), Some("Partner Tier"));
        assert_eq!(fields[0].label(), Some("Amount"));
        assert_eq!(fields[1].suggested_type(), FieldType::Text);
        assert!(fields[1].custom_field && fields[1].json_type.is_none() && fields[1].length.is_none());
        assert_eq!(fields[2].suggested_type(), FieldType::Json);
        assert!(parse_fields("fields", 200, "{\"data\":[]}").is_err());
    }
}
