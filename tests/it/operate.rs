//! Operator features: sharded backfills, first-time set-up, the configuration file.

use dealsync::sim::SimConfig;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sharded_tasks_write_exactly_the_whole_range_into_one_warehouse() {
    let sim = simulator(sim_config(8000)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let sink = format!("sqlite:{}", db.display());
    let mut runs = Vec::new();
    for index in 0..4 {
        let run = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--sink", &sink])
            .against(&sim)
            .env("CLOUD_RUN_TASK_INDEX", &index.to_string())
            .env("CLOUD_RUN_TASK_COUNT", "4")
            .spawn();
        runs.push(run);
    }
    let mut starts = Vec::new();
    for run in runs {
        let out = run.wait().await;
        out.assert_code(0);
        assert_eq!(out.event("shard")["count"], 4);
        starts.push((out.summary()["window_start"].as_str().unwrap().to_string(), out.summary()["window_end"].as_str().unwrap().to_string()));
    }
    starts.sort();
    assert_eq!(starts[0].0, "2026-10-01T00:00:00+00:00");
    assert_eq!(starts[3].1, "2026-11-01T00:00:00+00:00");
    assert!(starts.windows(2).all(|w| w[0].1 == w[1].0), "contiguous slices: {starts:?}");
    assert_eq!(warehouse_ids(&db), expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")));
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_runs WHERE kind = 'backfill' AND status = 'success'"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_without_its_task_count_is_a_configuration_error() {
    let sim = simulator(sim_config(100)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01"]).against(&sim).env("JOB_COMPLETION_INDEX", "1").run().await;
    out.assert_code(78);
    assert!(out.stderr.contains("DEALSYNC_TASK_COUNT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_exchange_prints_the_refresh_token_once_to_stdout_only() {
    let sim = simulator(SimConfig { refresh_token: "1000.fresh-refresh-XYZ".into(), ..sim_config(10) }).await;
    let out = Dealsync::new(&["auth", "exchange", "--grant-token", "1000.sim-grant-code"])
        .against(&sim)
        .env_remove("ZOHO_REFRESH_TOKEN")
        .run()
        .await;
    out.assert_code(0);
    assert_eq!(out.stdout, "ZOHO_REFRESH_TOKEN=1000.fresh-refresh-XYZ\n");
    assert!(!out.stderr.contains("fresh-refresh-XYZ"));
    assert!(out.stderr.contains("not shown again"));

    let bad = Dealsync::new(&["auth", "exchange", "--grant-token", "1000.expired"]).against(&sim).env_remove("ZOHO_REFRESH_TOKEN").run().await;
    bad.assert_code(78);
    assert!(bad.stderr.contains("grant code is wrong, already used or expired"), "{}", bad.stderr);
    assert!(bad.stdout.is_empty());

    let scopes = Dealsync::new(&["auth", "scopes"]).run().await;
    assert_eq!(scopes.stdout.trim(), "ZohoCRM.modules.deals.READ,ZohoSearch.securesearch.READ,ZohoCRM.coql.READ,ZohoCRM.settings.fields.READ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_sets_defaults_that_environment_and_flags_override() {
    let sim = simulator(sim_config(3000)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dealsync.toml");
    std::fs::write(&cfg, "[sync]\nwindow_field = \"Closing_Date\"\nsink = \"ndjson:from-file.ndjson\"\n[zoho]\nmax_concurrency = 2\n").unwrap();
    let out = Dealsync::new(&["sync", "--from", "2026-10-05", "--to", "2026-10-12"])
        .against(&sim)
        .env("DEALSYNC_CONFIG", cfg.to_str().unwrap())
        .run()
        .await;
    out.assert_code(0);
    assert_eq!(out.summary()["window_field"], "Closing_Date");
    assert!(out.summary()["sink"].as_str().unwrap().starts_with("ndjson:from-file.ndjson"));
    assert!(sim.stats().max_in_flight <= 2);

    // A flag beats the file.
    let out = Dealsync::new(&["sync", "--from", "2026-10-05", "--to", "2026-10-12", "--window-field", "Modified_Time", "--sink", "sqlite:x.db"])
        .against(&sim)
        .env("DEALSYNC_CONFIG", cfg.to_str().unwrap())
        .run()
        .await;
    out.assert_code(0);
    assert_eq!(out.summary()["window_field"], "Modified_Time");

    std::fs::write(&cfg, "[sync]\noverlap = \"forever\"\n").unwrap();
    let out = Dealsync::new(&["sync"]).against(&sim).env("DEALSYNC_CONFIG", cfg.to_str().unwrap()).run().await;
    out.assert_code(78);
    assert!(out.stderr.contains("sync.overlap"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_log_lines_carry_what_cloud_logging_reads() {
    let sim = simulator(sim_config(500)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-10-05"]).against(&sim).env("LOG_FORMAT", "gcp").run().await;
    out.assert_code(0);
    let events = out.events();
    assert_eq!(events.len(), out.stderr.lines().count(), "every line is one JSON object");
    for e in &events {
        assert!(matches!(e["severity"].as_str(), Some("DEBUG" | "INFO" | "WARNING" | "ERROR")), "{e}");
        assert!(e["message"].is_string() && e["time"].as_str().unwrap().ends_with('Z'));
    }
    let summary = out.summary();
    assert_eq!(summary["logging.googleapis.com/labels"]["run_id"], summary["run_id"]);
    assert!(!out.stderr.contains("\u{1b}["), "no colour codes in JSON");
}

#[test]
fn the_version_names_the_git_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealsync")).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let rev = text.trim().rsplit_once('(').map(|(_, r)| r.trim_end_matches(')').to_string()).unwrap();
    assert!(rev == "unknown" || (rev.len() == 12 && rev.chars().all(|c| c.is_ascii_hexdigit())), "{text}");
}
