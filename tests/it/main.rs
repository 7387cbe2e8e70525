//! Integration tests: the real binary against the real HTTP simulator (and, for error shapes the simulator
//! does not produce, a wiremock server).

mod cli;
mod config_errors;
mod criteria_props;
mod custom_fields;
mod deploy;
mod faults;
mod bigquery;
mod bigquery_errors;
mod helpers;
mod operate;
mod sync;
mod upstream_errors;
mod zoho_behaviours;
