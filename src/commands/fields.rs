//! `dealsync fields`: which Deals fields Zoho has (custom ones included), how dealsync stores each one today
//! (a standard column, a promoted column, or only inside `raw`), and the column type it would get if promoted.
//! `--format toml` writes the `[columns]` block to paste into the config file, so promoting a field is a copy.

use serde::Serialize;

use crate::config::cli::{FieldsArgs, FieldsFormat};
use crate::exit::Exit;
use crate::run::error::RunError;
use crate::schema::{standard_columns_of, FieldType, Promoted, STANDARD};
use crate::telemetry::one_line;
use crate::zoho::fields::FieldMeta;
use crate::zoho::ZohoClient;

#[derive(Debug, Serialize)]
pub struct FieldRow {
    pub api_name: String,
    pub label: Option<String>,
    pub data_type: Option<String>,
    pub json_type: Option<String>,
    pub custom: bool,
    /// The columns holding it now; empty when it lives only in `raw`.
    pub columns: Vec<String>,
    /// `standard`, `promoted` or `raw`.
    pub stored: &'static str,
    /// The type it has (promoted) or would have (suggested) as a promoted column.
    #[serde(rename = "type")]
    pub ty: FieldType,
    pub bigquery_type: String,
    pub sqlite_type: &'static str,
}

pub fn describe(fields: &[FieldMeta], promoted: &[Promoted]) -> Vec<FieldRow> {
    fields
        .iter()
        .map(|f| {
            let standard = Some(standard_columns_of(&f.api_name)).filter(|cols| !cols.is_empty());
            let mine: Vec<&Promoted> = promoted.iter().filter(|p| p.field == f.api_name).collect();
            let (stored, columns) = match (&standard, mine.is_empty()) {
                (Some(cols), _) => ("standard", cols.iter().map(|c| c.to_string()).collect()),
                (None, false) => ("promoted", mine.iter().map(|p| p.column.to_string()).collect()),
                (None, true) => ("raw", Vec::new()),
            };
            let ty = mine.first().map(|p| p.ty).unwrap_or_else(|| f.suggested_type());
            // A standard field is described by its first column; any other by the type it has or would have.
            let column = standard.as_ref().and_then(|cols| STANDARD.iter().find(|c| c.name == cols[0])).cloned();
            let column =
                column.unwrap_or_else(|| Promoted { field: f.api_name.clone(), column: String::new(), ty }.column());
            let (bq, mode, sqlite) = (column.ty.bigquery(), column.mode(), column.ty.sqlite());
            FieldRow {
                api_name: f.api_name.clone(),
                label: f.label().map(String::from),
                data_type: f.data_type.clone(),
                json_type: f.json_type.clone(),
                custom: f.custom_field,
                columns,
                stored,
                ty,
                bigquery_type: if mode == "REPEATED" { format!("ARRAY<{bq}>") } else { bq.to_string() },
                sqlite_type: sqlite,
            }
        })
        .collect()
}

/// A column name for a field: lowercase, `_` for anything else, never a standard column's name.
pub fn column_name(api_name: &str) -> String {
    let words: Vec<&str> = api_name.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut out = words.join("_").to_ascii_lowercase();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "f_");
    }
    if STANDARD.iter().any(|c| c.name == out) {
        out.push_str("_field");
    }
    out
}

pub fn render(rows: &[FieldRow], format: FieldsFormat) -> String {
    match format {
        FieldsFormat::Json => serde_json::to_string_pretty(rows).expect("rows serialize") + "\n",
        FieldsFormat::Text => {
            let head = ["api name", "label", "zoho type", "custom", "stored in", "type", "bigquery", "sqlite"];
            let lines: Vec<[String; 8]> = rows
                .iter()
                .map(|r| {
                    let zoho = r.data_type.as_ref().or(r.json_type.as_ref()).map_or("?", String::as_str);
                    let stored = if r.columns.is_empty() { "raw only".to_string() } else { r.columns.join(", ") };
                    [
                        one_line(&r.api_name),
                        one_line(r.label.as_deref().unwrap_or_default()),
                        one_line(zoho),
                        if r.custom { "yes" } else { "" }.into(),
                        stored,
                        r.ty.to_string(),
                        r.bigquery_type.clone(),
                        r.sqlite_type.to_string(),
                    ]
                })
                .collect();
            super::runs::aligned(&head.map(String::from), &lines)
        }
        FieldsFormat::Toml => {
            let mut out = String::from(
                "# Fields stored only in `raw` today. Keep the ones you want as typed columns and paste them into\n\
                 # config/dealsync.toml; the next run adds them (existing rows keep NULL until a backfill with --rewrite).\n",
            );
            // Zoho's names and labels are data: TOML strings quote them, and a comment holds no line break or other
            // control character, so nothing a label says can add a key or a table to the file.
            let comment_text = |s: &str| s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
            for r in rows.iter().filter(|r| r.stored == "raw") {
                let label = comment_text(r.label.as_deref().unwrap_or(""));
                let zoho = comment_text(r.data_type.as_deref().unwrap_or("?"));
                let (field, ty) = (toml::Value::from(r.api_name.as_str()), toml::Value::from(r.ty.to_string()));
                let column = column_name(&r.api_name);
                out.push_str(&format!("\n# {label} ({zoho})\n[columns.{column}]\nfield = {field}\ntype = {ty}\n"));
            }
            out
        }
    }
}

pub async fn fields(args: FieldsArgs, config: &crate::config::Config) -> Exit {
    match list(&args, config).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(event = "fields_failed", "{e}");
            e.exit()
        }
    }
}

async fn list(args: &FieldsArgs, config: &crate::config::Config) -> Result<(), RunError> {
    let (settings, source) = crate::run::setup::source(config, args.demo.then_some((100, 42))).await?;
    let timeout = args.request_timeout.to_std().unwrap_or(std::time::Duration::from_secs(30));
    let policy = crate::retry::RetryPolicy { max_attempts: 3, ..Default::default() };
    let result = async { ZohoClient::new(source.zoho.clone(), policy, timeout)?.fields("Deals").await }.await;
    drop(source);
    let fields: Vec<FieldMeta> = result?.into_iter().filter(|f| !args.custom || f.custom_field).collect();
    print!("{}", render(&describe(&fields, &settings.promoted), args.format));
    // With --custom the list lacks the standard fields, which may be promoted too.
    if !args.custom {
        for p in settings.promoted.iter().filter(|p| !fields.iter().any(|f| f.api_name == p.field)) {
            tracing::warn!(event = "promoted_field_unknown", field = %p.field, column = %p.column,
                "columns.{} promotes {}, which Zoho's Deals metadata does not list; the column will stay empty", p.column, p.field);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(api: &str, data_type: Option<&str>, custom: bool) -> FieldMeta {
        FieldMeta {
            api_name: api.into(),
            display_label: Some(api.replace('_', " ")),
            field_label: None,
            data_type: data_type.map(String::from),
            json_type: None,
            custom_field: custom,
            length: None,
        }
    }

    #[test]
    fn standard_promoted_and_raw_fields_are_told_apart() {
        let fields = [
            meta("Amount", Some("currency"), false),
            meta("Region", Some("picklist"), true),
            meta("Seats", Some("integer"), true),
        ];
        let promoted = [Promoted { field: "Region".into(), column: "region".into(), ty: FieldType::Text }];
        let rows = describe(&fields, &promoted);
        assert_eq!(
            (rows[0].stored, rows[0].columns.clone(), rows[0].bigquery_type.as_str()),
            ("standard", vec!["amount".to_string()], "NUMERIC")
        );
        assert_eq!((rows[1].stored, rows[1].columns.clone()), ("promoted", vec!["region".to_string()]));
        assert_eq!(
            (rows[2].stored, rows[2].ty, rows[2].bigquery_type.as_str(), rows[2].sqlite_type),
            ("raw", FieldType::Integer, "INT64", "INTEGER")
        );
    }

    #[test]
    fn a_hostile_field_label_cannot_add_a_table_to_the_toml_or_reach_the_terminal() {
        let mut evil = meta("Region", Some("text"), true);
        evil.display_label = Some("x\n[zoho]\naccounts_url = \"http://evil.example\"\n\u{1b}[31mred".into());
        let mut odd = meta("Odd", Some("text"), true);
        odd.api_name = "Odd\"\n[zoho]".into();
        let rows = describe(&[evil, odd], &[]);
        let toml_text = render(&rows, FieldsFormat::Toml);
        let parsed: toml::Table = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed.keys().collect::<Vec<_>>(), ["columns"], "{toml_text}");
        let text = render(&rows, FieldsFormat::Text);
        assert!(!text.contains('\u{1b}') && !text.contains("\n[zoho]"), "{text}");
    }

    #[test]
    fn the_toml_block_parses_back_into_valid_promotions() {
        let fields = [
            meta("Amount", Some("currency"), false),
            meta("Contract_Value", Some("currency"), true),
            meta("Type__c", None, true),
            meta("_2nd_Owner", Some("lookup"), true),
            meta("Tags", Some("multiselectpicklist"), true),
        ];
        let toml_text = render(&describe(&fields, &[]), FieldsFormat::Toml);
        let file: crate::config::FileConfig = toml::from_str(&toml_text).unwrap();
        let promoted = crate::config::promoted_columns(&file.columns).unwrap();
        let got: Vec<(&str, &str, FieldType)> =
            promoted.iter().map(|p| (p.column.as_str(), p.field.as_str(), p.ty)).collect();
        assert_eq!(
            got,
            vec![
                ("contract_value", "Contract_Value", FieldType::Decimal),
                ("f_2nd_owner", "_2nd_Owner", FieldType::LookupId),
                ("tags_field", "Tags", FieldType::TextList),
                ("type_c", "Type__c", FieldType::Json),
            ]
        );
    }
}
