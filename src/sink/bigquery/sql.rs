//! Table schemas and the SQL dealsync runs in BigQuery, generated from the shared column list so that the
//! SQLite table, the BigQuery table, the staging table and the MERGE can never disagree.

use serde_json::{json, Value};

use crate::schema::Column;

pub const RUNS_TABLE: &str = "_dealsync_runs";
pub const QUARANTINE_TABLE: &str = "_dealsync_quarantine";
pub const STAGING_PREFIX: &str = "_dealsync_stg_";

/// The canonical name of a type as BigQuery reports it back (INT64 and INTEGER are one type).
pub fn canonical_type(t: &str) -> &str {
    let legacy = [("INTEGER", "INT64"), ("FLOAT", "FLOAT64"), ("BOOLEAN", "BOOL"), ("RECORD", "STRUCT")];
    legacy.iter().find(|(name, _)| *name == t).map_or(t, |(_, canonical)| canonical)
}

/// The MERGE that makes a run's staged rows final: newest staged copy per deal, insert new deals, replace a
/// deal only with a newer copy (or an as new one when rewriting), never touch a deal the run did not stage.
pub fn merge_sql(target: &str, staging: &str, columns: &[Column], rewrite: bool) -> String {
    // Quoted: a promoted column may be named like a keyword (`order`).
    let cols: Vec<String> = columns.iter().map(|c| format!("`{}`", c.name)).collect();
    let op = if rewrite { ">=" } else { ">" };
    let set: Vec<String> = cols.iter().filter(|c| *c != "`deal_id`").map(|c| format!("{c} = S.{c}")).collect();
    let values: Vec<String> = cols.iter().map(|c| format!("S.{c}")).collect();
    let (set, cols, values) = (set.join(", "), cols.join(", "), values.join(", "));
    format!(
        "MERGE {target} T\n\
         USING (\n  SELECT * FROM {staging}\n  WHERE TRUE\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY deal_id ORDER BY modified_time DESC) = 1\n) S\n\
         ON T.deal_id = S.deal_id\n\
         WHEN MATCHED AND S.modified_time {op} T.modified_time THEN\n  UPDATE SET {set}\n\
         WHEN NOT MATCHED THEN\n  INSERT ({cols})\n  VALUES ({values})"
    )
}

/// What the MERGE will do, counted before it runs: staged rows, distinct deals, new deals, deals that a newer
/// copy will replace (the MERGE's source is each deal's newest staged copy: its latest `modified_time`).
pub fn merge_preview_sql(target: &str, staging: &str, rewrite: bool) -> String {
    let op = if rewrite { ">=" } else { ">" };
    format!(
        "SELECT\n  (SELECT COUNT(*) FROM {staging}) AS staged,\n  COUNT(*) AS deals,\n  \
         COUNTIF(T.deal_id IS NULL) AS inserted,\n  COUNTIF(T.deal_id IS NOT NULL AND S.modified_time {op} T.modified_time) AS updated\n\
         FROM (SELECT deal_id, MAX(modified_time) AS modified_time FROM {staging} GROUP BY deal_id) S\n\
         LEFT JOIN {target} T ON T.deal_id = S.deal_id"
    )
}

/// A statement and the values it names (`@p0`, `@p1`, …). Every value that comes from Zoho or the user travels
/// as a query parameter, never spliced into the text; only table names (validated identifiers) are.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl From<String> for Statement {
    fn from(sql: String) -> Statement {
        Statement { sql, params: Vec::new() }
    }
}

impl Statement {
    /// The `configuration.query` of a job running it.
    pub fn configuration(&self) -> Value {
        let mut q = json!({"query": self.sql, "useLegacySql": false});
        if !self.params.is_empty() {
            q["parameterMode"] = json!("NAMED");
            q["queryParameters"] = json!(self.params);
        }
        q
    }
}

/// The parameters of a statement being written: `bind` returns the name to put in the text.
#[derive(Debug, Default)]
pub struct Params(Vec<Value>);

impl Params {
    fn push(&mut self, ty: Value, value: Value) -> String {
        let name = format!("p{}", self.0.len());
        self.0.push(json!({"name": name, "parameterType": ty, "parameterValue": value}));
        format!("@{name}")
    }

    /// A scalar parameter of BigQuery type `ty` (`STRING`, `DATE`, `TIMESTAMP`, `INT64`).
    pub fn bind(&mut self, ty: &str, value: impl Into<String>) -> String {
        self.push(json!({"type": ty}), json!({"value": value.into()}))
    }

    /// An `ARRAY<STRUCT<…>>` parameter: `fields` are (name, type), each row's values in that order.
    pub fn bind_rows(&mut self, fields: &[(&str, &str)], rows: &[Vec<String>]) -> String {
        let types: Vec<Value> = fields.iter().map(|(n, t)| json!({"name": n, "type": {"type": t}})).collect();
        let struct_value = |r: &Vec<String>| {
            let members = fields.iter().zip(r).map(|((n, _), v)| (n.to_string(), json!({"value": v})));
            json!({"structValues": members.collect::<serde_json::Map<_, _>>()})
        };
        let values: Vec<Value> = rows.iter().map(struct_value).collect();
        let ty = json!({"type": "ARRAY", "arrayType": {"type": "STRUCT", "structTypes": types}});
        self.push(ty, json!({"arrayValues": values}))
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

/// The ledger's runs, newest first; with `good_only`, the last good scheduled run (the next nightly window starts
/// from its end). A run's `running` row counts only while the run has no final row (the ledger is appended to).
pub fn past_runs_sql(runs: &str, limit: u32, good_only: bool) -> Statement {
    let mut p = Params::default();
    let limit = p.bind("INT64", limit.to_string());
    let good = if good_only { "AND kind = 'scheduled' AND status IN ('success', 'partial')" } else { "" };
    p.statement(format!(
        "SELECT run_id, kind, window_field, UNIX_MICROS(window_start), UNIX_MICROS(window_end), status, exit_code,\n\
         UNIX_MICROS(started_at), UNIX_MICROS(finished_at), IFNULL(rows_inserted, 0) + IFNULL(rows_updated, 0),\n\
         IFNULL(quarantined, 0), error FROM {runs}\n\
         WHERE (status != 'running' OR run_id NOT IN (SELECT run_id FROM {runs} WHERE status != 'running')) {good}\n\
         ORDER BY started_at DESC, finished_at DESC LIMIT {limit}"
    ))
}

/// Rows that still count as won (rows from before these columns existed count as won and not deleted).
const LIVE: &str = "IFNULL(is_closed_won, TRUE) AND NOT IFNULL(is_deleted, FALSE)";

/// Soft-deletes deals: rows of `(deal_id, deleted_time RFC 3339)`, one a deal (a MERGE matches a target row once).
/// Only rows not yet marked change, so the count is the deals this run marked.
pub fn mark_deleted_sql(target: &str, rows: &[Vec<String>]) -> Statement {
    let set = "NOT IFNULL(T.is_deleted, FALSE) THEN\n  UPDATE SET is_deleted = TRUE, deleted_time = S.deleted_time";
    changes_sql(target, &[("deal_id", "STRING"), ("deleted_time", "TIMESTAMP")], rows, set)
}

/// Records deals that left "Closed Won": rows of `(deal_id, stage, modified_time RFC 3339)`, one a deal, only
/// over older rows.
pub fn mark_not_won_sql(target: &str, rows: &[Vec<String>]) -> Statement {
    let set = "T.modified_time < S.modified_time THEN\n  \
               UPDATE SET stage = S.stage, is_closed_won = FALSE, modified_time = S.modified_time";
    changes_sql(target, &[("deal_id", "STRING"), ("stage", "STRING"), ("modified_time", "TIMESTAMP")], rows, set)
}

/// One statement a batch of changes, its rows as one array parameter.
fn changes_sql(target: &str, fields: &[(&str, &str)], rows: &[Vec<String>], when_matched: &str) -> Statement {
    let mut p = Params::default();
    let changes = p.bind_rows(fields, rows);
    p.statement(format!(
        "MERGE {target} T\nUSING UNNEST({changes}) S\nON T.deal_id = S.deal_id\nWHEN MATCHED AND {when_matched}"
    ))
}

/// `select` (e.g. `COUNT(*)`) over the live rows of a window.
pub fn in_window_sql(select: &str, target: &str, w: &crate::window::Window) -> Statement {
    let mut p = Params::default();
    let (column, ty) = if w.field.is_date() { ("closing_date", "DATE") } else { ("modified_time", "TIMESTAMP") };
    let (a, b) = (p.bind(ty, w.start_str()), p.bind(ty, w.end_str()));
    p.statement(format!("SELECT {select} FROM {target} WHERE {column} >= {a} AND {column} < {b} AND {LIVE}"))
}

/// A column's type in DDL: `ARRAY<…>` when it is repeated.
pub fn column_type(c: &Column) -> String {
    match c.mode() {
        "REPEATED" => format!("ARRAY<{}>", c.ty.bigquery()),
        _ => c.ty.bigquery().to_string(),
    }
}

/// `CREATE TABLE` DDL of the target, equivalent to what dealsync creates through the API.
pub fn target_ddl(table: &str, columns: &[Column]) -> String {
    let column = |c: &Column| {
        let not_null = if c.mode() == "REQUIRED" { " NOT NULL" } else { "" };
        format!("  `{}` {}{not_null} OPTIONS(description = {:?})", c.name, column_type(c), c.description)
    };
    let cols = columns.iter().map(column).collect::<Vec<_>>().join(",\n");
    format!("CREATE TABLE IF NOT EXISTS {table} (\n{cols}\n)\nPARTITION BY closing_date\nCLUSTER BY deal_id;\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_zoho_travel_as_parameters_and_never_in_the_text() {
        let hostile = "1' OR TRUE; DROP TABLE x; --";
        let at = "2026-01-01T00:00:00+00:00".to_string();
        for st in [
            mark_not_won_sql("`p.d.t`", &[vec![hostile.into(), "Closed Lost".into(), at.clone()]]),
            mark_deleted_sql("`p.d.t`", &[vec![hostile.into(), at]]),
            last_good_sql("`p.d.r`", hostile),
        ] {
            assert!(!st.sql.contains(hostile) && !st.sql.contains("OR TRUE"), "{}", st.sql);
            let params = serde_json::to_string(&st.params).unwrap();
            assert!(params.contains(&serde_json::to_string(hostile).unwrap()), "{params}");
            for p in &st.params {
                assert!(st.sql.contains(&format!("@{}", p["name"].as_str().unwrap())), "every parameter is used");
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
            assert!(sql.contains(&format!("S.`{}`", c.name)), "{}", c.name);
        }
        assert!(!sql.contains("`deal_id` = S.`deal_id`,"), "the key is never updated");
    }
}
