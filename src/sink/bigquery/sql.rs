//! Table schemas and the SQL dealsync runs in BigQuery, generated from the shared column list so that the
//! SQLite table, the BigQuery table, the staging table and the MERGE can never disagree.

use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;

use crate::schema::{columns_of, Column, LEDGER, QUARANTINE};

pub const RUNS_TABLE: &str = "_dealsync_runs";
pub const QUARANTINE_TABLE: &str = "_dealsync_quarantine";
pub const STAGING_PREFIX: &str = "_dealsync_stg_";

fn field_type(bq_type: &str) -> FieldType {
    match bq_type {
        "STRING" => FieldType::String,
        "NUMERIC" => FieldType::Numeric,
        "INT64" => FieldType::Int64,
        "DATE" => FieldType::Date,
        "TIMESTAMP" => FieldType::Timestamp,
        "JSON" => FieldType::Json,
        "BOOL" => FieldType::Bool,
        other => unreachable!("column type {other} is not mapped"),
    }
}

/// The canonical name of a type as BigQuery reports it back (INT64 and INTEGER are one type).
pub fn canonical_type(t: &FieldType) -> &'static str {
    match t {
        FieldType::String => "STRING",
        FieldType::Bytes => "BYTES",
        FieldType::Integer | FieldType::Int64 => "INT64",
        FieldType::Float | FieldType::Float64 => "FLOAT64",
        FieldType::Numeric => "NUMERIC",
        FieldType::Bignumeric => "BIGNUMERIC",
        FieldType::Boolean | FieldType::Bool => "BOOL",
        FieldType::Timestamp => "TIMESTAMP",
        FieldType::Date => "DATE",
        FieldType::Time => "TIME",
        FieldType::Datetime => "DATETIME",
        FieldType::Record | FieldType::Struct => "STRUCT",
        FieldType::Geography => "GEOGRAPHY",
        FieldType::Json => "JSON",
        FieldType::Interval => "INTERVAL",
    }
}

fn field(c: &Column) -> TableFieldSchema {
    let mut f = TableFieldSchema::new(&c.name, field_type(c.ty.bigquery()));
    f.mode = Some(c.mode().to_string());
    f.description = Some(c.description.to_string());
    f
}

pub fn target_fields(columns: &[Column]) -> Vec<TableFieldSchema> {
    columns.iter().map(field).collect()
}

/// The ledger's fields (`_dealsync_runs`; the next default window starts from it).
pub fn ledger_fields() -> Vec<TableFieldSchema> {
    target_fields(&columns_of(&LEDGER))
}

/// The quarantine's fields (`_dealsync_quarantine`: records that could not be mapped or that BigQuery refused).
pub fn quarantine_fields() -> Vec<TableFieldSchema> {
    target_fields(&columns_of(&QUARANTINE))
}


/// Backquoted `project.dataset.table`.
pub fn table_ref(project: &str, dataset: &str, table: &str) -> String {
    format!("`{project}.{dataset}.{table}`")
}

/// The MERGE that makes a run's staged rows final: newest staged copy per deal, insert new deals, replace a
/// deal only with a newer copy (or an as new one when rewriting), never touch a deal the run did not stage.
pub fn merge_sql(target: &str, staging: &str, columns: &[Column], rewrite: bool) -> String {
    let cols: Vec<&str> = columns.iter().map(|c| c.name.as_ref()).collect();
    let op = if rewrite { ">=" } else { ">" };
    let set: Vec<String> = cols.iter().filter(|c| **c != "deal_id").map(|c| format!("{c} = S.{c}")).collect();
    let values: Vec<String> = cols.iter().map(|c| format!("S.{c}")).collect();
    format!(
        "MERGE {target} T\n\
         USING (\n  SELECT * FROM {staging}\n  WHERE TRUE\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY deal_id ORDER BY modified_time DESC) = 1\n) S\n\
         ON T.deal_id = S.deal_id\n\
         WHEN MATCHED AND S.modified_time {op} T.modified_time THEN\n  UPDATE SET {}\n\
         WHEN NOT MATCHED THEN\n  INSERT ({})\n  VALUES ({})",
        set.join(", "),
        cols.join(", "),
        values.join(", ")
    )
}

/// What the MERGE will do, counted before it runs (BigQuery's DML statistics are not in the client's model):
/// staged rows, distinct deals, new deals, deals that a newer copy will replace.
pub fn merge_preview_sql(target: &str, staging: &str, rewrite: bool) -> String {
    let op = if rewrite { ">=" } else { ">" };
    format!(
        "SELECT\n  (SELECT COUNT(*) FROM {staging}) AS staged,\n  COUNT(*) AS deals,\n  \
         COUNTIF(T.deal_id IS NULL) AS inserted,\n  COUNTIF(T.deal_id IS NOT NULL AND S.modified_time {op} T.modified_time) AS updated\n\
         FROM (\n  SELECT deal_id, modified_time FROM {staging}\n  WHERE TRUE\n  \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY deal_id ORDER BY modified_time DESC) = 1\n) S\n\
         LEFT JOIN {target} T ON T.deal_id = S.deal_id"
    )
}

/// The end of the last good scheduled run over a field, in microseconds since the epoch.
pub fn last_good_sql(runs: &str, field: &str) -> String {
    format!(
        "SELECT UNIX_MICROS(MAX(window_end)) AS last_end FROM {runs}\n\
         WHERE kind = 'scheduled' AND window_field = '{field}' AND status IN ('success', 'partial')"
    )
}

/// Rows that still count as won (rows from before these columns existed count as won and not deleted).
const LIVE: &str = "IFNULL(is_closed_won, TRUE) AND NOT IFNULL(is_deleted, FALSE)";

/// A string literal for BigQuery SQL (ids and stages are ours or Zoho's; quotes and backslashes are escaped).
pub fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Soft-deletes deals: `(deal_id, deleted_time RFC 3339)`.
pub fn mark_deleted_sql(target: &str, rows: &[(String, String)]) -> String {
    let cases: Vec<String> = rows.iter().map(|(id, t)| format!("WHEN {} THEN TIMESTAMP {}", literal(id), literal(t))).collect();
    let ids: Vec<String> = rows.iter().map(|(id, _)| literal(id)).collect();
    format!(
        "UPDATE {target} SET is_deleted = TRUE, deleted_time = CASE deal_id {} END WHERE deal_id IN ({}) AND NOT IFNULL(is_deleted, FALSE)",
        cases.join(" "),
        ids.join(", ")
    )
}

/// Records deals that left "Closed Won": `(deal_id, stage, modified_time RFC 3339)`, only over older rows.
pub fn mark_not_won_sql(target: &str, rows: &[(String, String, String)]) -> String {
    let stage: Vec<String> = rows.iter().map(|(id, st, _)| format!("WHEN {} THEN {}", literal(id), literal(st))).collect();
    let time: Vec<String> = rows.iter().map(|(id, _, t)| format!("WHEN {} THEN TIMESTAMP {}", literal(id), literal(t))).collect();
    let ids: Vec<String> = rows.iter().map(|(id, _, _)| literal(id)).collect();
    let time_case = format!("CASE deal_id {} END", time.join(" "));
    format!(
        "UPDATE {target} SET stage = CASE deal_id {} END, is_closed_won = FALSE, modified_time = {time_case} \
         WHERE deal_id IN ({}) AND modified_time < {time_case}",
        stage.join(" "),
        ids.join(", ")
    )
}

/// The condition selecting a window's rows (bounds are ours: dates and RFC 3339 instants, no quoting issue).
pub fn window_condition(w: &crate::window::Window) -> String {
    if w.field.is_date() {
        format!("closing_date >= DATE '{}' AND closing_date < DATE '{}' AND {LIVE}", w.start_str(), w.end_str())
    } else {
        let f = |t: &chrono::DateTime<chrono::FixedOffset>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        format!("modified_time >= TIMESTAMP '{}' AND modified_time < TIMESTAMP '{}' AND {LIVE}", f(&w.start), f(&w.end))
    }
}

/// `CREATE TABLE` DDL of the target, equivalent to what dealsync creates through the API.
pub fn target_ddl(table: &str, columns: &[Column]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| {
            let ty = if c.mode() == "REPEATED" { format!("ARRAY<{}>", c.ty.bigquery()) } else { c.ty.bigquery().to_string() };
            let not_null = if c.mode() == "REQUIRED" { " NOT NULL" } else { "" };
            format!("  {} {ty}{not_null} OPTIONS(description = {:?})", c.name, c.description)
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n{}\n)\nPARTITION BY closing_date\nCLUSTER BY deal_id;\n",
        cols.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_updates_only_with_newer_rows_and_names_every_column() {
        let columns = crate::schema::columns(&[]);
        let sql = merge_sql("`p.d.t`", "`p.d._dealsync_stg_x`", &columns, false);
        assert!(sql.contains("WHEN MATCHED AND S.modified_time > T.modified_time THEN"));
        assert!(sql.contains("PARTITION BY deal_id ORDER BY modified_time DESC"));
        for c in &columns {
            assert!(sql.contains(&format!("S.{}", c.name)), "{}", c.name);
        }
        assert!(!sql.contains("deal_id = S.deal_id,"), "the key is never updated");
    }

    #[test]
    fn every_column_type_maps_to_a_bigquery_type() {
        let all = [crate::schema::columns(&[]), columns_of(&LEDGER), columns_of(&QUARANTINE)].concat();
        for c in all {
            assert_eq!(canonical_type(&field_type(c.ty.bigquery())), c.ty.bigquery(), "{}", c.name);
        }
    }
}
