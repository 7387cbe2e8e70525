//! The command line itself: usage errors, help, schema.

use assert_cmd::Command;
use predicates::prelude::*;

use crate::helpers::Dealsync;

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
fn every_sink_is_named_in_the_help_and_the_readme_and_an_unknown_one_lists_them() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = readme.lines().find(|l| l.starts_with("| `--sink`")).expect("the README's --sink row");
    let help = |cmd: &str| {
        let out = dealsync().args([cmd, "--help"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let (sync, check, runs) = (help("sync"), help("check"), help("runs"));
    for form in dealsync::sink::FORMS {
        let ledger = dealsync::sink::ledger_forms().contains(&form);
        assert!(row.contains(&format!("`{form}`")), "the README's --sink row names {form}");
        assert!(sync.contains(form) && check.contains(form), "sync and check --help name {form}");
        assert_eq!(runs.contains(form), ledger, "runs --help names {form} iff it has a ledger");
    }
    dealsync()
        .args(["sync", "--sink", "postgres://x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!("use {}", dealsync::sink::forms())));
    dealsync().args(["runs", "--sink", "ndjson:x.ndjson"]).assert().code(2).stderr(predicate::str::contains(
        "`ndjson:x.ndjson` keeps no run ledger; use --sink sqlite:PATH or --sink bigquery",
    ));
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
    for help in [&["--help"][..], &["sync", "--help"][..]] {
        dealsync()
            .args(help)
            .assert()
            .code(0)
            .stdout(predicate::str::contains("Exit codes:").and(predicate::str::contains("78  configuration")));
    }
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
        .stdout(predicate::str::contains("\"deal_id\" TEXT NOT NULL PRIMARY KEY"));
}

#[test]
fn the_bigquery_schema_has_the_json_schema_and_the_ddl() {
    let out = dealsync().args(["schema", "--format", "bigquery"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // A valid JSON schema file for `bq mk --schema`: an array of fields, nothing else.
    let fields: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(fields.iter().any(|f| f["name"] == "tags" && f["mode"] == "REPEATED"), "{text}");
    assert!(fields.iter().all(|f| f["name"].is_string() && f["type"].is_string()));
    let out = dealsync().args(["schema", "--format", "bigquery-ddl"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("PARTITION BY closing_date\nCLUSTER BY deal_id;"), "{text}");
    assert!(text.contains("`amount` NUMERIC"), "{text}");
    assert!(text.contains("`deal_id` STRING NOT NULL"), "{text}");
}

#[test]
fn verify_shows_and_accepts_only_its_own_flags() {
    let help = dealsync().args(["verify", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for sync_only in ["--dry-run", "--rewrite", "--deadline", "--overlap", "--metrics-file"] {
        assert!(!help.contains(sync_only), "verify --help lists {sync_only}");
    }
    assert!(help.contains("--demo") && help.contains("--from"));
    dealsync().args(["verify", "--from", "2026-10-01", "--dry-run"]).assert().code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_runs_against_the_demo_simulator_without_credentials() {
    let synced = Dealsync::new(&["sync", "--demo", "--demo-deals", "800", "--from", "2026-09-01"]).run().await;
    synced.assert_code(0);
    let out = Dealsync::new(&[
        "verify",
        "--demo",
        "--demo-deals",
        "800",
        "--from",
        "2026-09-01",
        "--to",
        &synced.summary()["window_end"].as_str().unwrap()[..10],
    ])
    .args(&["--sink", "sqlite:dealsync-demo.db"])
    .reuse(synced.dir)
    .run()
    .await;
    // The demo's data moves with its clock: what matters is that verify reached both sides and compared them.
    assert!(out.code == 0 || out.code == 3, "exit {}: {}", out.code, out.stderr);
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert!(doc["crm"].as_u64().unwrap() > 0, "{}", out.stdout);
    assert!(!out.stderr.contains("ZOHO_CLIENT_ID"), "{}", out.stderr);
}

#[test]
fn a_window_wholly_in_the_future_is_a_usage_error_that_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let next_year = (chrono::Utc::now() + chrono::Duration::days(400)).format("%Y-%m-%d").to_string();
    dealsync()
        .current_dir(dir.path())
        .env("ZOHO_CLIENT_ID", "id")
        .env("ZOHO_CLIENT_SECRET", "secret")
        .env("ZOHO_REFRESH_TOKEN", "token")
        .args(["sync", "--from", &next_year])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("in the future"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file was created");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = dealsync().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("dealsync") && text.contains("verify") && text.contains("runs"), "{shell}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_logs_only_warnings_and_errors() {
    let out = Dealsync::new(&["sync", "--demo", "--demo-deals", "300", "--quiet"]).run().await;
    out.assert_code(0);
    let severities: Vec<String> =
        out.events().iter().map(|e| e["severity"].as_str().unwrap_or_default().to_string()).collect();
    assert!(severities.iter().all(|s| s == "WARNING" || s == "ERROR"), "{}", out.stderr);
    let loud = Dealsync::new(&["sync", "--demo", "--demo-deals", "300"]).run().await;
    assert!(loud.events().iter().any(|e| e["event"] == "run_summary"), "without --quiet the summary is logged");
    // Structured values are JSON objects in a JSON log line, so log-based metrics can read into them.
    let amounts = &loud.summary()["won_amount_by_currency"];
    assert!(amounts.as_object().is_some_and(|m| !m.is_empty() && m.values().all(|v| v.is_string())), "{amounts}");
}

/// Runs `dealsync sync --demo` with `extra`, reads one line of its stdout and goes away (`| head -1`); gives
/// the exit code and stderr.
fn sync_read_by_head(extra: &[&str]) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dealsync"))
        .args(["sync", "--demo", "--demo-deals", "20000"])
        .args(extra)
        .current_dir(dir.path())
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "{first}");
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_reader_that_closes_stdout_early_ends_the_run_quietly_with_exit_0() {
    let (code, stderr) = sync_read_by_head(&["--dry-run"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("\"event\":\"output_closed\""), "{stderr}");
    assert!(!stderr.contains("Broken pipe") && !stderr.contains("\"severity\":\"ERROR\""), "{stderr}");
}

#[test]
fn a_reader_that_closes_an_ndjson_export_on_stdout_early_fails_the_run_with_its_summary() {
    // Unlike a dry run, this is the export itself: a consumer that dies after one row must not look like a success.
    let (code, stderr) = sync_read_by_head(&["--sink", "ndjson:-"]);
    assert_eq!(code, Some(1), "{stderr}");
    let summary = stderr.lines().find(|l| l.contains("\"event\":\"run_summary\"")).expect("a run summary");
    assert!(summary.contains("stdout") && summary.contains("\"exit_code\":1"), "{summary}");
    assert!(!stderr.contains("\"event\":\"output_closed\""), "{stderr}");
}

#[test]
fn help_examples_are_whole_commands_a_person_can_copy_at_100_columns() {
    let commands: [&[&str]; 11] = [
        &[],
        &["sync"],
        &["verify"],
        &["check"],
        &["fields"],
        &["schema"],
        &["runs"],
        &["simulate"],
        &["completions"],
        &["auth", "exchange"],
        &["auth", "scopes"],
    ];
    for args in commands {
        let help = |columns: &str| {
            let out = dealsync().args(args).arg("--help").env("COLUMNS", columns).output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            text.split_once("Examples:").map(|(_, ex)| ex.to_string()).unwrap_or_default()
        };
        // Narrow or wide, the examples are the same lines: none is wrapped into two.
        assert_eq!(help("100"), help("400"), "dealsync {} --help wraps an example at 100 columns", args.join(" "));
    }
}

#[test]
fn no_color_keeps_terminal_logs_plain() {
    // `script` gives the run a terminal, where logs are coloured unless NO_COLOR is set.
    let bin = env!("CARGO_BIN_EXE_dealsync");
    let run = |no_color: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &format!("{bin} schema --format text >/dev/null; {bin} runs"), "/dev/null"])
            .current_dir(dir.path())
            .env_remove("LOG_FORMAT")
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let coloured = run(false);
    assert!(coloured.contains("dealsync.db does not exist") && coloured.contains('\u{1b}'), "{coloured}");
    let plain = run(true);
    assert!(plain.contains("dealsync.db does not exist") && !plain.contains('\u{1b}'), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_in_use_is_logged_and_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.toml"), "[log]\nformat = \"text\"\n[zoho]\ndc = \"mars\"\n").unwrap();
    let out = Dealsync::new(&["sync", "--from", "2026-10-01"])
        .env("DEALSYNC_CONFIG", "mine.toml")
        .env("ZOHO_CLIENT_ID", "id")
        .env("ZOHO_CLIENT_SECRET", "secret")
        .env("ZOHO_REFRESH_TOKEN", "token")
        .reuse(dir)
        .run()
        .await;
    // LOG_FORMAT=json (set by the harness) wins over the file's text; the file's bad data centre is named by its key.
    out.assert_code(78);
    assert_eq!(out.event("config_file")["config_file"], "mine.toml");
    assert!(out.stderr.contains("zoho.dc (mine.toml)"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_on_a_terminal_never_passes_the_windows_closed_won_count_and_shows_whole_rates() {
    use crate::helpers::{sim_config, simulator};
    // Slow enough answers that the bar is drawn several times; ties reordered so that deals are read twice.
    let sim =
        simulator(dealsync_sim::SimConfig { latency: std::time::Duration::from_millis(40), ..sim_config(6000) }).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_dealsync");
    let out = crate::helpers::with_sim(&mut std::process::Command::new("script"), &sim)
        .args(["-qec", &format!("{bin} sync --from 2026-10-01 --to 2026-11-01"), "/dev/null"])
        .current_dir(dir.path())
        .env("ZOHO_MAX_CONCURRENCY", "2")
        .env("NO_COLOR", "1")
        .env_remove("LOG_FORMAT")
        .env_remove("BIGQUERY_PROJECT")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let bars: Vec<(u64, u64, String)> = text
        .lines()
        .filter_map(|l| {
            let (counts, rest) = l.split_once(" closed-won deals (")?;
            let (done, total) = counts.rsplit(' ').next()?.split_once('/')?;
            Some((done.parse().ok()?, total.parse().ok()?, rest.split(',').next()?.to_string()))
        })
        .collect();
    assert!(!bars.is_empty(), "the bar was drawn: {text}");
    let truth = query_count(&dir.path().join("dealsync.db"));
    for (done, total, rate) in &bars {
        assert!(done <= total, "{done}/{total}: {text}");
        assert_eq!(*total, truth, "the total is the window's closed-won count");
        assert!(rate.ends_with("/s") && !rate.contains('.'), "a whole rate: {rate}");
    }
    let human = text.lines().find(|l| l.starts_with("dealsync ok: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(human.starts_with(&format!("dealsync ok: {truth} closed-won deals")), "{human}");
}

fn query_count(db: &std::path::Path) -> u64 {
    crate::helpers::query_i64(db, "SELECT count(*) FROM closed_won_deals") as u64
}

#[test]
fn a_duration_too_long_for_the_calendar_is_a_usage_error_not_a_panic() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealsync"))
        .args(["sync", "--demo", "--index-lag", "500000y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too long"));
}
