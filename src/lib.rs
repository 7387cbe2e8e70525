//! dealsync: keeps a warehouse in step with the deals a sales team wins in Zoho CRM.
//!
//! Modules form one direction, the data's, and none imports one after it (a test reads the `use` paths):
//! the foundations (`exit`, `files`, `retry`, `shutdown`, `telemetry`) → `schema` (the one table of columns and
//! where their values come from) → `config` (flags, environment, file) → `window` (what to fetch) → `zoho`
//! (auth, search pages, retries, completeness) → `mapping` (deal → row, or quarantine) → `sink` (BigQuery |
//! SQLite | NDJSON) → `run` (a sync in three phases: set-up, fetch and write, finish; the summary and metrics)
//! → `commands` (sync, verify, check, fields, schema, auth, runs) → `main`. The Zoho simulator is a crate of
//! its own (`crates/dealsync-sim`), used only by `run::demo`.

pub mod commands;
pub mod config;
pub mod exit;
pub mod files;
pub mod mapping;
pub mod retry;
pub mod run;
pub mod schema;
pub mod shutdown;
pub mod sink;
pub mod telemetry;
pub mod window;
pub mod zoho;
