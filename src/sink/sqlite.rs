//! The embedded local warehouse: one SQLite file with the same table and ledger as BigQuery, so that a
//! newcomer (and every test) sees exactly what production would hold. Rows are upserted by `deal_id` and only
//! a newer `modified_time` replaces a row, so re-running any window never duplicates or regresses a deal.
//! SQLite calls block, so each batch runs on the blocking pool with the connection moved in and back out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::types::ToSqlOutput;
use rusqlite::{params_from_iter, Connection, OptionalExtension, Params, ToSql};

use super::{Ending, Finished, PastRuns, SinkError, TableSpec, WriteStats};
use crate::exit::Exit;
use crate::schema::{
    format_instant, sort_ids, Column, DealRow, PastRun, Quarantined, RunRecord, Value, LEDGER, QUARANTINE,
};
use crate::window::{Window, WindowField};
use crate::zoho::changes::{Deleted, StageChange};

pub const TABLE: &str = "closed_won_deals";
pub const RUNS_TABLE: &str = "_dealsync_runs";
pub const QUARANTINE_TABLE: &str = "_dealsync_quarantine";

/// Rows per transaction: every commit rewrites most of the id index (ids arrive in random order), so fewer,
/// larger commits cost less per row. A crash loses at most the uncommitted rows, which the next run fetches again.
const TRANSACTION_ROWS: usize = 20_000;
/// A transaction is also committed once it has been open this long, so that on a slow source (or with sharded
/// backfills waiting for the write lock) the lock is held briefly and committed rows become visible steadily.
const TRANSACTION_AGE: Duration = Duration::from_secs(2);
/// Page size for new files: a row is about 3 KB with `raw`, so smaller pages split on every insert, and larger
/// ones make each cache miss of the randomly ordered indexes cost more.
const PAGE_SIZE: u32 = 16384;

pub struct SqliteSink {
    path: PathBuf,
    conn: Option<Connection>,
    /// When the open transaction began.
    began: Option<Instant>,
    /// The rows of the open transaction: reported once its COMMIT succeeds, never before (a transaction that
    /// fails, e.g. on a full disk, leaves nothing, and the run's counters must say so).
    pending: WriteStats,
    /// The upsert: an INSERT that leaves a stored row alone, then an UPDATE that replaces an older one.
    upsert_sql: Arc<(String, String)>,
    columns: Vec<Column>,
}

impl SqliteSink {
    /// A sink whose table has `spec`'s columns (the promoted ones too), replacing rows as it says.
    pub fn new(path: impl Into<PathBuf>, spec: TableSpec) -> Self {
        SqliteSink {
            path: path.into(),
            conn: None,
            began: None,
            pending: WriteStats::default(),
            upsert_sql: Arc::new(upsert_sql(&spec.columns, spec.rewrite)),
            columns: spec.columns,
        }
    }

    pub fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> SinkError {
        SinkError::new(self.describe(), format!("{what}: {e}"), Exit::Internal)
    }

    fn config_err(&self, message: String) -> SinkError {
        SinkError::new(self.describe(), message, Exit::Config)
    }

    /// The file cannot take this run's writes (said the same by `check` and by `sync`'s preflight).
    fn not_writable(&self, why: impl std::fmt::Display) -> SinkError {
        let path = self.path.display();
        self.config_err(format!("{path} cannot be written ({why}); give the run write access or choose another --sink"))
    }

    /// The columns to add to the tables `c` has, or the first reason dealsync cannot write them (naming the table
    /// and the column), then `outcome`. Reads only, so `check` says exactly what `sync` would.
    fn fit(&self, c: &Connection, outcome: &str) -> Result<Vec<(String, Column)>, SinkError> {
        let refuse = |problem: String| Err(self.config_err(format!("{problem}: {outcome}")));
        let mut to_add = Vec::new();
        for (table, want, key) in tables(&self.columns) {
            let have = table_info(c, table).map_err(|e| self.err("reading the tables", e))?;
            if have.is_empty() {
                continue; // created by the run
            }
            for Have { name, ty, required, pk } in &have {
                let problem = match want.iter().find(|w| w.name.eq_ignore_ascii_case(name)) {
                    Some(w) if !ty.eq_ignore_ascii_case(w.ty.sqlite()) => {
                        let ty = if ty.is_empty() { "untyped" } else { ty.as_str() };
                        format!("{table}.{name} is {ty}; dealsync writes {}", w.ty.sqlite())
                    }
                    None if *required && *pk == 0 => {
                        format!("{table}.{name} is NOT NULL without a default, and dealsync does not write it")
                    }
                    _ => continue,
                };
                return refuse(problem);
            }
            let keys: Vec<&str> = have.iter().filter(|h| h.pk > 0).map(|h| h.name.as_str()).collect();
            if let Some(key) = key.filter(|k| keys.len() != 1 || !keys[0].eq_ignore_ascii_case(k)) {
                let found = if keys.is_empty() { "none".to_string() } else { keys.join(", ") };
                return refuse(format!("{table}.{key} must be the table's PRIMARY KEY (found: {found})"));
            }
            for w in want.into_iter().filter(|w| !have.iter().any(|h| h.name.eq_ignore_ascii_case(&w.name))) {
                if w.kept == crate::schema::Kept::Required {
                    let name = &w.name;
                    return refuse(format!(
                        "{table} lacks the column {name}, which dealsync needs on every row (NOT NULL) and cannot add"
                    ));
                }
                to_add.push((table.to_string(), w));
            }
        }
        Ok(to_add)
    }

    /// Rolls back what SQLite may hold open and forgets its rows, so that the file and the counters agree.
    fn roll_back(&mut self) {
        if let Some(c) = self.conn.as_ref().filter(|c| !c.is_autocommit()) {
            let _ = c.execute_batch("ROLLBACK");
        }
        (self.pending, self.began) = (WriteStats::default(), None);
    }

    async fn with_conn<T, F>(&mut self, what: &'static str, f: F) -> Result<T, SinkError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let mut conn = self.conn.take().ok_or_else(|| self.err(what, "the database is not open"))?;
        let joined = tokio::task::spawn_blocking(move || (f(&mut conn), conn));
        let (r, conn) = joined.await.map_err(|e| self.err(what, e))?;
        self.conn = Some(conn);
        r.map_err(|e| self.err(what, e))
    }

    /// Opens an existing database without creating anything (for `dealsync verify`).
    fn open_existing(&mut self) -> Result<(), SinkError> {
        if self.conn.is_none() {
            if !self.path.exists() {
                return Err(self.config_err(format!("{} does not exist", self.path.display())));
            }
            self.conn = Some(open_read_only(&self.path).map_err(|e| self.err("opening the database", e))?);
        }
        Ok(())
    }

    pub async fn check(&mut self) -> Result<Vec<String>, SinkError> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let d = dir.display();
        let meta =
            std::fs::metadata(dir).map_err(|e| self.config_err(format!("the directory {d} is not usable: {e}")))?;
        if meta.permissions().readonly() {
            let why = format!("the directory {d} is read-only, and SQLite keeps its journal beside the file");
            return Err(self.not_writable(why));
        }
        let path = self.path.display();
        if !self.path.exists() {
            return Ok(vec![format!("{path} will be created on the first run")]);
        }
        std::fs::OpenOptions::new().append(true).open(&self.path).map_err(|e| self.not_writable(e))?;
        let conn = open_read_only(&self.path).map_err(|e| self.err("opening the database read-only", e))?;
        let to_add = self.fit(&conn, "a sync would stop before fetching")?;
        let exists = table_info(&conn, TABLE).map_err(|e| self.err("reading the schema", e))?;
        let mut lines = vec![if !exists.is_empty() {
            let count = conn.query_row(&format!("SELECT count(*) FROM {TABLE}"), [], |r| r.get::<_, i64>(0));
            let rows = count.map_err(|e| self.err("counting rows", e))?;
            format!("{path} is writable ({rows} rows in {TABLE})")
        } else {
            format!("{path} is writable; {TABLE} will be created on the first run")
        }];
        if !to_add.is_empty() {
            let names: Vec<String> = to_add.iter().map(|(t, c)| format!("{t}.{}", c.name)).collect();
            lines.push(format!("the next run adds the columns {}", names.join(", ")));
        }
        Ok(lines)
    }

    pub async fn prepare(&mut self) -> Result<(), SinkError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(self.config_err(format!("the directory {} does not exist", dir.display())));
        }
        // A new warehouse is private (SQLite gives its journal the file's mode). Created only if still missing:
        // a sharded run may have created it since, and truncating it would drop that run's tables.
        match crate::files::create_new(&self.path, 0o600) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(self.not_writable(e)),
            _ => {}
        }
        let conn = Connection::open(&self.path).map_err(|e| self.err("opening the database", e))?;
        // The page size takes effect only while the file is empty (a new warehouse): before the probe below.
        let settings = conn.busy_timeout(Duration::from_secs(30)).and(conn.pragma_update(None, "page_size", PAGE_SIZE));
        settings.map_err(|e| self.err("opening the database", e))?;
        // Before any Zoho request: the file must take writes, and every table it has must fit dealsync's rows.
        // Nothing is altered until both hold, so an incompatible table is left exactly as it was.
        let probe = "SAVEPOINT dealsync_probe; CREATE TABLE _dealsync_probe (x INTEGER); ROLLBACK TO dealsync_probe; \
             RELEASE dealsync_probe;";
        conn.execute_batch(probe).map_err(|e| self.not_writable(e))?;
        let to_add = self.fit(&conn, "nothing was changed; move the table aside or choose another --sink")?;
        self.conn = Some(conn);
        let columns = self.columns.clone();
        // Quoted for a POSIX shell, so that the command in the page-size hint can be pasted as it is.
        let path = format!("'{}'", self.path.display().to_string().replace('\'', r"'\''"));
        self.with_conn("creating tables", move |c| create_tables(c, &columns, &to_add, &path)).await
    }

    /// Upserts `rows` in the open transaction, committed once it is `TRANSACTION_ROWS` big or `TRANSACTION_AGE` old.
    pub async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats, SinkError> {
        if rows.is_empty() {
            return Ok(WriteStats::default());
        }
        let began = *self.began.get_or_insert_with(Instant::now);
        let held = self.pending.written() + self.pending.unchanged;
        let commit = held as usize + rows.len() >= TRANSACTION_ROWS || began.elapsed() >= TRANSACTION_AGE;
        let sql = self.upsert_sql.clone();
        let written = self
            .with_conn("writing rows", move |c| {
                begin_if_needed(c)?;
                let mut stats = WriteStats::default();
                let mut insert = c.prepare_cached(&sql.0)?;
                let mut update = c.prepare_cached(&sql.1)?;
                for row in &rows {
                    // Converted once, for the INSERT and, when the deal is stored, the UPDATE.
                    let values = row.values.iter().map(ToSql::to_sql).collect::<rusqlite::Result<Vec<_>>>()?;
                    if insert.execute(params_from_iter(&values))? == 1 {
                        stats.inserted += 1;
                    } else if update.execute(params_from_iter(&values))? == 1 {
                        stats.updated += 1;
                    } else {
                        stats.unchanged += 1;
                    }
                }
                if commit {
                    c.execute_batch("COMMIT")?;
                }
                Ok(stats)
            })
            .await;
        // The transaction's rows are lost with it.
        let stats = written.inspect_err(|_| self.roll_back())?;
        self.pending.add(stats);
        if commit {
            return self.commit_open().await;
        }
        Ok(WriteStats::default())
    }

    /// Commits the open transaction, if any, and returns its rows.
    pub(super) async fn commit_open(&mut self) -> Result<WriteStats, SinkError> {
        let pending = std::mem::take(&mut self.pending);
        self.began = None;
        if self.conn.as_ref().is_some_and(|c| !c.is_autocommit()) {
            self.with_conn("committing rows", |c| c.execute_batch("COMMIT")).await?;
        }
        Ok(pending)
    }

    pub async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<(), SinkError> {
        // Part of the open transaction: a quarantined record is committed with the rows of its page.
        self.with_conn("writing quarantined records", move |c| {
            begin_if_needed(c)?;
            let mut stmt = c.prepare_cached(&(insert_into(QUARANTINE_TABLE, &QUARANTINE) + QUARANTINE_UPSERT))?;
            items.iter().try_for_each(|q| stmt.execute(params_from_iter(q.values())).map(drop))
        })
        .await
    }

    pub async fn last_good_window_end(&mut self, field: WindowField) -> Result<Option<DateTime<Utc>>, SinkError> {
        let sql = "SELECT window_end FROM _dealsync_runs
                   WHERE kind = 'scheduled' AND window_field = ?1 AND status IN ('success', 'partial')
                   ORDER BY julianday(window_end) DESC LIMIT 1";
        let read = move |c: &mut Connection| c.query_row(sql, [field.api_name()], |r| r.get(0)).optional();
        let end: Option<String> = self.with_conn("reading the run ledger", read).await?;
        end.map(|s| parse_instant(&s).map_err(|e| self.err("reading the run ledger", format!("window_end `{s}`: {e}"))))
            .transpose()
    }

    pub async fn mark_deleted(&mut self, deleted: Vec<Deleted>) -> Result<u64, SinkError> {
        let sql = format!("UPDATE {TABLE} SET is_deleted = 1, deleted_time = ?2 WHERE deal_id = ?1 AND is_deleted = 0");
        let params = deleted.into_iter().map(|d| (d.deal_id, format_instant(&d.deleted_time))).collect();
        self.update_each("marking deleted deals", sql, params).await
    }

    pub async fn mark_not_won(&mut self, changes: Vec<StageChange>) -> Result<u64, SinkError> {
        let sql = format!(
            "UPDATE {TABLE} SET stage = ?2, is_closed_won = 0, modified_time = ?3 WHERE deal_id = ?1 AND modified_time < ?3"
        );
        let params = changes.into_iter().map(|ch| (ch.deal_id, ch.stage, format_instant(&ch.modified_time))).collect();
        self.update_each("recording reopened deals", sql, params).await
    }

    /// Commits the open transaction, then runs `sql` once per item's parameters in one transaction, and counts the
    /// rows it changed.
    async fn update_each<P>(&mut self, what: &'static str, sql: String, items: Vec<P>) -> Result<u64, SinkError>
    where
        P: Params + Send + 'static,
    {
        self.commit_open().await?;
        self.with_conn(what, move |c| {
            let tx = c.transaction()?;
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut n = 0;
            for params in items {
                n += stmt.execute(params)? as u64;
            }
            drop(stmt);
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    pub async fn count_in_window(&mut self, w: &Window) -> Result<Option<u64>, SinkError> {
        self.open_existing()?;
        let (sql, bounds) = window_sql("count(*)", w);
        let n = self.with_conn("counting the window's rows", move |c| c.query_row(&sql, bounds, |r| r.get(0))).await?;
        Ok(Some(n))
    }

    pub async fn ids_in_window(&mut self, w: &Window) -> Result<Vec<String>, SinkError> {
        self.open_existing()?;
        let (sql, bounds) = window_sql("deal_id", w);
        let read = move |c: &mut Connection| c.prepare(&sql)?.query_map(bounds, |r| r.get(0))?.collect();
        let mut ids: Vec<String> = self.with_conn("listing the window's rows", read).await?;
        sort_ids(&mut ids);
        Ok(ids)
    }

    /// Commits the open transaction, also when the run stopped: each row is a complete, final upsert.
    pub async fn finish(&mut self, ending: Ending) -> Result<Finished, SinkError> {
        let kept = "the rows written so far are committed (each is a complete, newest-wins upsert)".to_string();
        match self.commit_open().await {
            Ok(stats) => Ok(Finished { stats, kept }),
            Err(e) if ending == Ending::Complete => Err(e),
            Err(e) => {
                // Rolled back: its rows are not in the file, and the counters leave them out.
                tracing::warn!(event = "flush_failed", "could not write the last rows before stopping: {e}");
                self.roll_back();
                let kept = "the pages committed before the last one are kept; the last one could not be written";
                Ok(Finished { stats: WriteStats::default(), kept: kept.into() })
            }
        }
    }

    pub async fn record_run(&mut self, run: &RunRecord) -> Result<(), SinkError> {
        let values = run.values();
        self.with_conn("recording the run", move |c| {
            // A failed run may leave its transaction open: its rows are complete upserts, so keep them if SQLite
            // still can, and record the run in any case.
            if !c.is_autocommit() && c.execute_batch("COMMIT").is_err() {
                let _ = c.execute_batch("ROLLBACK");
            }
            let sql = insert_into(RUNS_TABLE, &LEDGER).replacen("INSERT", "INSERT OR REPLACE", 1);
            c.prepare_cached(&sql)?.execute(params_from_iter(values)).map(drop)
        })
        .await
    }
}

/// `SELECT {select}` over a window's live rows, with its two bound values.
fn window_sql(select: &str, w: &Window) -> (String, [String; 2]) {
    let (column, start, end) = if w.field.is_date() {
        ("closing_date", w.start_str(), w.end_str())
    } else {
        // Stored instants are fixed-width UTC text, so the bounds in the same form compare correctly and use the index.
        let f = |t: &DateTime<chrono::FixedOffset>| format_instant(&t.to_utc());
        ("modified_time", f(&w.start), f(&w.end))
    };
    let live = "is_closed_won = 1 AND is_deleted = 0";
    (format!("SELECT {select} FROM {TABLE} WHERE {column} >= ?1 AND {column} < ?2 AND {live}"), [start, end])
}

/// `BEGIN IMMEDIATE` unless a transaction is open: it takes the write lock at once, so concurrent writers (sharded
/// backfills into one file) wait in the busy handler instead of failing on a lock upgrade.
fn begin_if_needed(c: &Connection) -> rusqlite::Result<()> {
    if c.is_autocommit() {
        c.execute_batch("BEGIN IMMEDIATE")?;
    }
    Ok(())
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// An instant as the ledger stores it (RFC 3339).
fn parse_instant(s: &str) -> chrono::ParseResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).map(|t| t.to_utc())
}

/// A column a table has, as `PRAGMA table_info` describes it.
struct Have {
    name: String,
    ty: String,
    /// NOT NULL without a default.
    required: bool,
    /// Its position in the primary key, 0 outside it.
    pk: i64,
}

fn table_info(c: &Connection, table: &str) -> rusqlite::Result<Vec<Have>> {
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})"))?;
    let rows = stmt.query_map([], |r| {
        let required = r.get::<_, bool>(3)? && r.get::<_, Option<String>>(4)?.is_none();
        Ok(Have { name: r.get(1)?, ty: r.get(2)?, required, pk: r.get(5)? })
    })?;
    rows.collect()
}

/// Each table dealsync writes, its columns and its primary key.
fn tables(columns: &[Column]) -> [(&'static str, Vec<Column>, Option<&'static str>); 3] {
    [
        (TABLE, columns.to_vec(), Some(crate::schema::KEY)),
        (RUNS_TABLE, LEDGER.to_vec(), Some("run_id")),
        (QUARANTINE_TABLE, QUARANTINE.to_vec(), None),
    ]
}

/// The DDL of a table of `columns` whose primary key is the column `key` (none for the quarantine).
fn table_sql(table: &str, columns: &[Column], key: Option<&str>) -> String {
    let column = |c: &Column| format!("    \"{}\" {}", c.name, c.sqlite_definition_in(Some(c.name.as_ref()) == key));
    let cols: Vec<String> = columns.iter().map(column).collect();
    format!("CREATE TABLE IF NOT EXISTS {table} (\n{}\n)", cols.join(",\n"))
}

pub fn create_table_sql(columns: &[Column]) -> String {
    table_sql(TABLE, columns, Some(crate::schema::KEY))
}

/// One row per deal and run: a record quarantined again in the same run replaces its row, and every run that
/// meets it adds its own (records without an id are all kept: SQLite's unique indexes let NULLs repeat).
const QUARANTINE_UPSERT: &str = " ON CONFLICT(deal_id, run_id) DO UPDATE SET reason = excluded.reason, \
     raw = excluded.raw, quarantined_at = excluded.quarantined_at";

const INDEXES: &str = "
DROP INDEX IF EXISTS _dealsync_quarantine_deal;
CREATE UNIQUE INDEX IF NOT EXISTS _dealsync_quarantine_deal_run ON _dealsync_quarantine (deal_id, run_id);
-- Covering indexes for reconciliation's window counts (no table page is read).
DROP INDEX IF EXISTS closed_won_deals_modified_time;
CREATE INDEX IF NOT EXISTS closed_won_deals_window ON closed_won_deals (modified_time, is_closed_won, is_deleted);
CREATE INDEX IF NOT EXISTS closed_won_deals_closing ON closed_won_deals (closing_date, is_closed_won, is_deleted);
DROP INDEX IF EXISTS closed_won_deals_closing_date;
";

fn insert_into(table: &str, columns: &[Column]) -> String {
    // Quoted: a promoted column may be named like a keyword (`order`).
    let names = columns.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
    let placeholders = (1..=columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    format!("INSERT INTO {table} ({names}) VALUES ({placeholders})")
}

/// Inserts a new deal, or else replaces the stored row when the incoming copy is newer (or as new, when rewriting
/// on purpose). Two statements, not `ON CONFLICT DO UPDATE`, with which every insert cost 5 % more in SQLite
/// (and telling an insert from an update took a RETURNING clause that cost 150 %).
fn upsert_sql(columns: &[Column], rewrite: bool) -> (String, String) {
    let sets: Vec<String> =
        columns.iter().enumerate().skip(1).map(|(i, c)| format!("\"{}\" = ?{}", c.name, i + 1)).collect();
    let mt = columns.iter().position(|c| c.name == "modified_time").expect("modified_time column") + 1;
    let op = if rewrite { "<=" } else { "<" };
    let insert = format!("{} ON CONFLICT(deal_id) DO NOTHING", insert_into(TABLE, columns));
    let update = format!(
        "UPDATE {TABLE} SET {} WHERE deal_id = ?1 AND julianday(modified_time) {op} julianday(?{mt})",
        sets.join(", ")
    );
    (insert, update)
}

/// Values as SQLite stores them: decimals in their shortest exact form, dates and instants as exact text, lists
/// as a JSON array, booleans as 0 and 1.
impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::from(rusqlite::types::Null),
            Value::Text(t) => t.as_str().into(),
            Value::Shared(t) => (&**t).into(),
            Value::Integer(n) => (*n).into(),
            Value::Decimal(d) => d.normalize().to_string().into(),
            Value::Boolean(b) => (*b).into(),
            Value::Date(d) => d.to_string().into(),
            Value::Timestamp(t) => format_instant(t).into(),
            Value::TextList(l) => serde_json::to_string(l).expect("strings serialize").into(),
            Value::Json(j) => j.get().into(),
        })
    }
}

/// Sets the connection up and creates or completes the tables in one transaction (`path`: for the hint).
fn create_tables(c: &mut Connection, cols: &[Column], to_add: &[(String, Column)], path: &str) -> rusqlite::Result<()> {
    // A rollback journal: appended rows are not journaled, whereas WAL writes every page twice (log, then
    // checkpoint); readers wait (busy timeout) while a page commits. A page cache of 4 MiB keeps a 1M-deal run
    // inside the 40 MB memory budget with room to spare (BENCHMARKS.md).
    c.execute_batch("PRAGMA journal_mode = TRUNCATE; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -4096")?;
    // Immediate, like `begin_if_needed`: sharded runs creating one file wait for each other's write lock.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Additive evolution: a database from an older dealsync gains the new columns (all have defaults).
    for (table, col) in to_add {
        tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN \"{}\" {}", col.name, col.sqlite_definition()))?;
        tracing::info!(event = "columns_added", table = %table, columns = %col.name, "added a column to the SQLite table");
    }
    // Until 0.1 the quarantine's `deal_id` was its primary key (a copy of the target's), so a deal quarantined by
    // one run could never be quarantined again and every later run over it failed: it is rebuilt without it (its
    // old index goes with the first of `INDEXES`).
    let rekey = table_info(&tx, QUARANTINE_TABLE)?.iter().any(|h| h.name == "deal_id" && h.pk > 0);
    if rekey {
        tx.execute_batch("ALTER TABLE _dealsync_quarantine RENAME TO _dealsync_quarantine_old")?;
    }
    // After the columns: the indexes cover some of them.
    let tables = tables(cols).map(|(table, columns, key)| table_sql(table, &columns, key));
    tx.execute_batch(&format!("{};\n{INDEXES}", tables.join(";\n")))?;
    if rekey {
        let names = QUARANTINE.iter().map(|c| c.name.to_string()).collect::<Vec<_>>().join(", ");
        tx.execute_batch(&format!(
            "INSERT INTO {QUARANTINE_TABLE} ({names}) SELECT {names} FROM _dealsync_quarantine_old; \
                 DROP TABLE _dealsync_quarantine_old;"
        ))?;
        tracing::info!(event = "quarantine_rekeyed", "the quarantine now keeps one row per deal and run");
    }
    tx.commit()?;
    let page_size: u32 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    if page_size != PAGE_SIZE {
        tracing::info!(
            event = "sqlite_page_size",
            page_size,
            "this warehouse keeps its {page_size}-byte pages; new ones use {PAGE_SIZE}, with which a write costs \
             35-55 % less CPU once the table holds a million rows; to convert it while no sync runs (VACUUM needs free \
             space the size of the file): sqlite3 {path} 'PRAGMA page_size = {PAGE_SIZE}; VACUUM'"
        );
    }
    Ok(())
}

/// The newest `limit` runs of the ledger at `path` and its last good run; reads only, never creates.
pub fn past_runs(path: &Path, limit: u32) -> Result<PastRuns, SinkError> {
    let sink = SqliteSink::new(path, TableSpec::default());
    if !path.exists() {
        return Err(sink.config_err(format!("{} does not exist: no run has written there", path.display())));
    }
    let c = open_read_only(path).map_err(|e| sink.err("opening", e))?;
    if table_info(&c, RUNS_TABLE).map_err(|e| sink.err("reading the schema", e))?.is_empty() {
        return Err(sink.config_err(format!("{} holds no run ledger ({RUNS_TABLE})", path.display())));
    }
    let select = |filter: &str, limit: u32| -> rusqlite::Result<Vec<PastRun>> {
        let sql = format!(
            "SELECT run_id, kind, window_field, window_start, window_end, status, exit_code, started_at, finished_at,
                    IFNULL(rows_inserted, 0) + IFNULL(rows_updated, 0), IFNULL(quarantined, 0), error
             FROM {RUNS_TABLE} {filter} ORDER BY julianday(started_at) DESC, julianday(finished_at) DESC, rowid DESC LIMIT ?1"
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map([limit], |r| {
            let at = |i: usize| -> rusqlite::Result<DateTime<Utc>> {
                parse_instant(&r.get::<_, String>(i)?)
                    .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
            };
            Ok(PastRun {
                run_id: r.get(0)?,
                kind: r.get(1)?,
                window_field: r.get(2)?,
                window_start: at(3)?,
                window_end: at(4)?,
                status: r.get(5)?,
                exit_code: r.get(6)?,
                started_at: at(7)?,
                finished_at: at(8)?,
                rows_written: r.get(9)?,
                quarantined: r.get(10)?,
                error: r.get(11)?,
            })
        })?;
        rows.collect()
    };
    let good = "WHERE kind = 'scheduled' AND status IN ('success', 'partial')";
    let read = select("", limit).and_then(|runs| Ok((runs, select(good, 1)?.pop())));
    read.map_err(|e| sink.err("reading the run ledger", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{map_json, Mapped, RunStamp};

    fn row(id: u64, modified: &str) -> DealRow {
        let stamp: RunStamp = "run-1".parse().unwrap();
        let json = format!(r#"{{"id":"{}","Stage":"Closed Won","Modified_Time":"{modified}"}}"#, 5000 + id);
        match map_json(&json, &stamp) {
            Mapped::Row(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn rows(ids: std::ops::Range<u64>) -> Vec<DealRow> {
        ids.map(|i| row(i, "2026-10-01T10:00:00+05:30")).collect()
    }

    #[tokio::test]
    async fn each_row_counts_as_inserted_updated_or_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::new(dir.path().join("w.db"), TableSpec::default());
        sink.prepare().await.unwrap();
        let (old, new) = ("2026-10-01T10:00:00+05:30", "2026-10-02T10:00:00+05:30");
        let counts = |s: WriteStats| (s.inserted, s.updated, s.unchanged);

        // A deal twice in one batch: inserted, then updated by the newer copy.
        sink.write_rows(vec![row(1, old), row(2, old), row(2, new)]).await.unwrap();
        let quarantined = Quarantined {
            deal_id: Some("9".into()),
            reason: "Amount: not a number".into(),
            raw: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            sync_run_id: "run-1".into(),
            quarantined_at: Utc::now(),
        };
        sink.write_quarantine(vec![quarantined]).await.unwrap();
        assert_eq!(counts(sink.finish(Ending::Complete).await.unwrap().stats), (2, 1, 0));

        sink.write_rows(vec![row(3, old), row(1, old), row(2, new), row(2, old), row(1, new)]).await.unwrap();
        assert_eq!(counts(sink.finish(Ending::Complete).await.unwrap().stats), (1, 1, 3));
    }

    /// Rows another connection can see: only committed ones.
    fn committed(path: &std::path::Path) -> i64 {
        let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row(&format!("SELECT count(*) FROM {TABLE}"), [], |r| r.get(0)).unwrap()
    }

    #[tokio::test]
    async fn rows_are_committed_once_the_transaction_is_full_or_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut sink = SqliteSink::new(&path, TableSpec::default());
        sink.prepare().await.unwrap();

        sink.write_rows(rows(0..200)).await.unwrap();
        assert_eq!(committed(&path), 0, "a page's rows wait in the open transaction");
        let full = TRANSACTION_ROWS as u64;
        sink.write_rows(rows(200..full)).await.unwrap();
        assert_eq!(committed(&path), full as i64, "a full transaction is committed");

        sink.write_rows(rows(full..full + 200)).await.unwrap();
        assert_eq!(committed(&path), full as i64);
        tokio::time::sleep(TRANSACTION_AGE).await;
        sink.write_rows(rows(full + 200..full + 400)).await.unwrap();
        assert_eq!(committed(&path), full as i64 + 400, "an old transaction is committed with the next page");

        sink.write_rows(rows(full + 400..full + 600)).await.unwrap();
        sink.finish(Ending::Complete).await.unwrap();
        assert_eq!(committed(&path), full as i64 + 600);
        let page_size: i64 = Connection::open(&path).unwrap().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(page_size, i64::from(PAGE_SIZE), "a new warehouse gets pages that hold several rows");
    }
}
