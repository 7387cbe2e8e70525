//! Table schemas and the SQL dealsync runs in BigQuery, generated from the shared column list so that the
//! SQLite table, the BigQuery table, the staging table and the MERGE can never disagree.

use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;
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

/// A statement and the values it names (`@p0`, `@p1`, …). Every value that comes from Zoho or the user travels
/// as a query parameter, never spliced into the text; only table names (validated identifiers) are.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<QueryParameter>,
}

impl From<String> for Statement {
    fn from(sql: String) -> Statement {
        Statement { sql, params: Vec::new() }
    }
}

/// The parameters of a statement being written: `bind` returns the name to put in the text.
#[derive(Debug, Default)]
pub struct Params(Vec<QueryParameter>);

impl Params {
    /// A scalar parameter of BigQuery type `ty` (`STRING`, `DATE`, `TIMESTAMP`).
    pub fn bind(&mut self, ty: &str, value: impl Into<String>) -> String {
        let name = format!("p{}", self.0.len());
        self.0.push(QueryParameter {
            name: Some(name.clone()),
            parameter_type: Some(QueryParameterType { r#type: ty.to_string(), ..Default::default() }),
            parameter_value: Some(QueryParameterValue { value: Some(value.into()), ..Default::default() }),
        });
        format!("@{name}")
    }

    pub fn statement(self, sql: String) -> Statement {
        Statement { sql, params: self.0 }
    }
}

/// The end of the last good scheduled run over a field, in microseconds since the epoch.
pub fn last_good_sql(runs: &str, field: &str) -> Statement {
    let mut p = Params::default();
    let field = p.bind("STRING", field);
    p.statement(format!(
        "SELECT UNIX_MICROS(MAX(window_end)) AS last_end FROM {runs}\n\
         WHERE kind = 'scheduled' AND window_field = {field} AND status IN ('success', 'partial')"
    ))
}

/// The ledger's runs, newest first; with `good_only`, the last good one.
pub fn past_runs_sql(runs: &str, limit: u32, good_only: bool) -> Statement {
    let mut p = Params::default();
    let limit = p.bind("INT64", limit.to_string());
    let filter = if good_only { "WHERE status IN ('success', 'partial')" } else { "" };
    p.statement(format!(
        "SELECT run_id, kind, window_field, UNIX_MICROS(window_start), UNIX_MICROS(window_end), status, exit_code,\n\
         UNIX_MICROS(started_at), UNIX_MICROS(finished_at), IFNULL(rows_inserted, 0) + IFNULL(rows_updated, 0),\n\
         IFNULL(quarantined, 0), error FROM {runs} {filter} ORDER BY started_at DESC, finished_at DESC LIMIT {limit}"
    ))
}

/// Rows that still count as won (rows from before these columns existed count as won and not deleted).
const LIVE: &str = "IFNULL(is_closed_won, TRUE) AND NOT IFNULL(is_deleted, FALSE)";

/// Soft-deletes deals: `(deal_id, deleted_time RFC 3339)`.
pub fn mark_deleted_sql(target: &str, rows: &[(String, String)]) -> Statement {
    let mut p = Params::default();
    let bound: Vec<(String, String)> =
        rows.iter().map(|(id, t)| (p.bind("STRING", id.as_str()), p.bind("TIMESTAMP", t.as_str()))).collect();
    let cases: Vec<String> = bound.iter().map(|(id, t)| format!("WHEN {id} THEN {t}")).collect();
    let ids: Vec<&str> = bound.iter().map(|(id, _)| id.as_str()).collect();
    p.statement(format!(
        "UPDATE {target} SET is_deleted = TRUE, deleted_time = CASE deal_id {} END WHERE deal_id IN ({}) AND NOT IFNULL(is_deleted, FALSE)",
        cases.join(" "),
        ids.join(", ")
    ))
}

/// Records deals that left "Closed Won": `(deal_id, stage, modified_time RFC 3339)`, only over older rows.
pub fn mark_not_won_sql(target: &str, rows: &[(String, String, String)]) -> Statement {
    let mut p = Params::default();
    let bound: Vec<(String, String, String)> = rows
        .iter()
        .map(|(id, st, t)| {
            (p.bind("STRING", id.as_str()), p.bind("STRING", st.as_str()), p.bind("TIMESTAMP", t.as_str()))
        })
        .collect();
    let stage: Vec<String> = bound.iter().map(|(id, st, _)| format!("WHEN {id} THEN {st}")).collect();
    let time: Vec<String> = bound.iter().map(|(id, _, t)| format!("WHEN {id} THEN {t}")).collect();
    let ids: Vec<&str> = bound.iter().map(|(id, _, _)| id.as_str()).collect();
    let time_case = format!("CASE deal_id {} END", time.join(" "));
    p.statement(format!(
        "UPDATE {target} SET stage = CASE deal_id {} END, is_closed_won = FALSE, modified_time = {time_case} \
         WHERE deal_id IN ({}) AND modified_time < {time_case}",
        stage.join(" "),
        ids.join(", ")
    ))
}

/// Which of `ids` the target holds.
pub fn held_ids_sql(target: &str, ids: &[&str]) -> Statement {
    let mut p = Params::default();
    let names: Vec<String> = ids.iter().map(|id| p.bind("STRING", *id)).collect();
    p.statement(format!("SELECT deal_id FROM {target} WHERE deal_id IN ({})", names.join(", ")))
}

/// `select` (e.g. `COUNT(*)`) over the live rows of a window.
pub fn in_window_sql(select: &str, target: &str, w: &crate::window::Window) -> Statement {
    let mut p = Params::default();
    let condition = if w.field.is_date() {
        let (a, b) = (p.bind("DATE", w.start_str()), p.bind("DATE", w.end_str()));
        format!("closing_date >= {a} AND closing_date < {b}")
    } else {
        let f = |t: &chrono::DateTime<chrono::FixedOffset>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let (a, b) = (p.bind("TIMESTAMP", f(&w.start)), p.bind("TIMESTAMP", f(&w.end)));
        format!("modified_time >= {a} AND modified_time < {b}")
    };
    p.statement(format!("SELECT {select} FROM {target} WHERE {condition} AND {LIVE}"))
}

/// `CREATE TABLE` DDL of the target, equivalent to what dealsync creates through the API.
pub fn target_ddl(table: &str, columns: &[Column]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| {
            let ty = if c.mode() == "REPEATED" {
                format!("ARRAY<{}>", c.ty.bigquery())
            } else {
                c.ty.bigquery().to_string()
            };
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
    fn values_from_zoho_travel_as_parameters_and_never_in_the_text() {
        let hostile = "1' OR TRUE; DROP TABLE x; --";
        let rows = [(hostile.to_string(), "Closed Lost".to_string(), "2026-01-01T00:00:00+00:00".to_string())];
        for st in [
            mark_not_won_sql("`p.d.t`", &rows),
            mark_deleted_sql("`p.d.t`", &[(hostile.into(), "2026-01-01T00:00:00+00:00".into())]),
            held_ids_sql("`p.d.t`", &[hostile]),
            last_good_sql("`p.d.r`", hostile),
        ] {
            assert!(!st.sql.contains(hostile) && !st.sql.contains("OR TRUE"), "{}", st.sql);
            assert!(st
                .params
                .iter()
                .any(|p| p.parameter_value.as_ref().and_then(|v| v.value.as_deref()) == Some(hostile)));
            for p in &st.params {
                assert!(st.sql.contains(&format!("@{}", p.name.as_deref().unwrap())), "every parameter is used");
            }
        }
    }

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
