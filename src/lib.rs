//! dealsync: keeps a warehouse in step with the deals a sales team wins in Zoho CRM. Modules depend in one
//! direction, the data's (a test reads the `use` paths): foundations (`exit`, `files`, `retry`, `shutdown`,
//! `telemetry`) → `schema` → `config` → `window` → `zoho` → `mapping` → `sink` → `run` → `commands` → `main`.
//! CONTRIBUTING.md says what each holds; the Zoho simulator (`crates/dealsync-sim`) is used only by `run::demo`.

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
