//! The command line itself: usage errors, help, schema.

use assert_cmd::Command;
use predicates::prelude::*;

fn dealsync() -> Command {
    let mut c = Command::cargo_bin("dealsync").unwrap();
    c.env_remove("RUST_LOG").env("LOG_FORMAT", "json");
    c
}

#[test]
fn a_malformed_flag_is_a_usage_error_with_exit_2() {
    dealsync()
        .args(["sync", "--from", "31/01/2026"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--from").and(predicate::str::contains("2026-01-31")));
    dealsync().args(["sync", "--to", "2026-01-01"]).assert().code(2);
    dealsync().args(["sync", "--from", "2026-02-01", "--to", "2026-01-01"]).assert().code(2);
    dealsync().args(["sync", "--window-field", "Amount"]).assert().code(2);
    dealsync().args(["sync", "--sink", "postgres://x"]).assert().code(2);
}

#[test]
fn a_closing_date_window_needs_whole_dates() {
    dealsync()
        .args([
            "sync",
            "--demo",
            "--window-field",
            "Closing_Date",
            "--from",
            "2026-01-01T10:00:00Z",
            "--to",
            "2026-01-02",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("whole dates"));
}

#[test]
fn help_and_version_exit_0_with_examples() {
    dealsync().arg("--help").assert().code(0).stdout(predicate::str::contains("Examples"));
    dealsync().args(["sync", "--help"]).assert().code(0).stdout(predicate::str::contains("--from 2026-01-01"));
    dealsync().arg("--version").assert().code(0).stdout(predicate::str::starts_with("dealsync 0."));
}

#[test]
fn the_schema_lists_every_column_with_its_warehouse_type() {
    let out = dealsync().args(["schema", "--format", "json"]).output().unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!("schema_json", String::from_utf8(out.stdout).unwrap());
    dealsync()
        .args(["schema", "--format", "sqlite"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deal_id TEXT NOT NULL PRIMARY KEY"));
}

#[test]
fn the_bigquery_schema_has_the_json_schema_and_the_ddl() {
    let out = dealsync().args(["schema", "--format", "bigquery"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"mode\": \"REPEATED\""), "{text}");
    assert!(text.contains("PARTITION BY closing_date\nCLUSTER BY deal_id;"), "{text}");
    assert!(text.contains("amount NUMERIC"));
    assert!(text.contains("deal_id STRING NOT NULL"));
}
