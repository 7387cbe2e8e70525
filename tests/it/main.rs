//! Integration tests: the real binary against the real HTTP simulator (and, for error shapes the simulator
//! does not produce, a wiremock server).

// The tests read the variables the test script sets (the emulator's address); the product reads its own
// only through config::Config.
#![allow(clippy::disallowed_methods)]

mod architecture;
mod bigquery;
mod bigquery_errors;
mod bq_harness;
mod cli;
mod config_errors;
mod criteria_props;
mod custom_fields;
mod deploy;
mod faults;
mod helpers;
mod history;
mod operate;
mod preflight;
mod sync;
mod upstream_errors;
mod zoho_behaviours;
