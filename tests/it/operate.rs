//! Operator features: sharded backfills, first-time set-up, the configuration file.

use std::os::unix::fs::PermissionsExt;

use dealsync_sim::SimConfig;

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
        starts.push((
            out.summary()["window_start"].as_str().unwrap().to_string(),
            out.summary()["window_end"].as_str().unwrap().to_string(),
        ));
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
    let out =
        Dealsync::new(&["sync", "--from", "2026-10-01"]).against(&sim).env("JOB_COMPLETION_INDEX", "1").run().await;
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

    let bad = Dealsync::new(&["auth", "exchange", "--grant-token", "1000.expired"])
        .against(&sim)
        .env_remove("ZOHO_REFRESH_TOKEN")
        .run()
        .await;
    bad.assert_code(78);
    assert!(bad.stderr.contains("grant code is wrong, already used or expired"), "{}", bad.stderr);
    assert!(bad.stdout.is_empty());

    let scopes = Dealsync::new(&["auth", "scopes"]).run().await;
    assert_eq!(
        scopes.stdout.trim(),
        "ZohoCRM.modules.deals.READ,ZohoSearch.securesearch.READ,ZohoCRM.coql.READ,ZohoCRM.settings.fields.READ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_sets_defaults_that_environment_and_flags_override() {
    let sim = simulator(sim_config(3000)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dealsync.toml");
    std::fs::write(
        &cfg,
        "[sync]\nwindow_field = \"Closing_Date\"\nsink = \"ndjson:from-file.ndjson\"\n[zoho]\nmax_concurrency = 2\n",
    )
    .unwrap();
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
    let out = Dealsync::new(&[
        "sync",
        "--from",
        "2026-10-05",
        "--to",
        "2026-10-12",
        "--window-field",
        "Modified_Time",
        "--sink",
        "sqlite:x.db",
    ])
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
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-10-05"])
        .against(&sim)
        .env("LOG_FORMAT", "gcp")
        .run()
        .await;
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

/// `dealsync simulate` as a separate process, with the variables it prints.
struct SimulateProcess {
    child: std::process::Child,
    url: String,
    vars: Vec<(String, String)>,
}

impl SimulateProcess {
    fn start(args: &[&str]) -> SimulateProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dealsync"))
            .args(["simulate", "--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let export = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.trim_start().starts_with("export "))
            .expect("the simulator prints the variables");
        let vars: Vec<(String, String)> = export
            .trim_start()
            .trim_start_matches("export ")
            .split_whitespace()
            .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
            .collect();
        let url = vars.iter().find(|(k, _)| k == "ZOHO_ACCOUNTS_URL").unwrap().1.clone();
        SimulateProcess { child, url, vars }
    }

    fn dealsync(&self, args: &[&str]) -> Dealsync {
        self.vars.iter().fold(Dealsync::new(args), |d, (k, v)| d.env(k, v))
    }
}

impl Drop for SimulateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_against_dealsync_simulate_shows_deletions_reopened_deals_and_reconciliation() {
    let sim = SimulateProcess::start(&["--deals", "3000", "--seed", "5"]);
    let from = (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d").to_string();
    let first = sim.dealsync(&["sync", "--sink", "sqlite:try.db", "--from", &from]).run().await;
    first.assert_code(0);
    let db = first.dir.path().join("try.db");
    let held = warehouse_ids(&db);
    assert!(held.len() >= 5, "{}", first.summary());
    // The newest deals: inside the next scheduled run's default window (the last 24 hours).
    let newest = |i: usize| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("SELECT deal_id FROM closed_won_deals ORDER BY modified_time DESC LIMIT 1 OFFSET ?1", [i], |r| {
                r.get::<_, String>(0)
            })
            .unwrap()
    };
    let (gone, lost, removed) = (newest(0), newest(1), newest(2));

    let http = reqwest::Client::new();
    let listed: serde_json::Value = http
        .get(format!("{}/_sim/deals?stage=Closed%20Won&limit=3", sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(listed.as_array().unwrap().iter().all(|d| d["stage"] == "Closed Won"));
    let r = http.post(format!("{}/_sim/deals/{gone}/delete", sim.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.post(format!("{}/_sim/deals/{lost}/stage?to=Closed%20Lost", sim.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.post(format!("{}/_sim/deals/{lost}/stage?to=Won", sim.url)).send().await.unwrap();
    assert_eq!(r.status(), 400, "unknown stages are refused");

    // Windows end (exclusive) at the run's start in whole seconds: let the change's second pass, as a person would.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = sim.dealsync(&["sync", "--sink", "sqlite:try.db", "--index-lag", "0s"]).reuse(first.dir).run().await;
    second.assert_code(0);
    assert_eq!((second.count("rows_deleted"), second.count("rows_reopened")), (1, 1), "{}", second.summary());
    let db = second.dir.path().join("try.db");
    assert_eq!(query_i64(&db, &format!("SELECT is_deleted FROM closed_won_deals WHERE deal_id = '{gone}'")), 1);
    assert_eq!(query_i64(&db, &format!("SELECT count(*) FROM closed_won_deals WHERE deal_id = '{lost}' AND is_closed_won = 0 AND stage = 'Closed Lost'")), 1);

    // A row removed behind dealsync's back: verify names it and exits 3.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM closed_won_deals WHERE deal_id = ?1", [&removed])
        .unwrap();
    let verify = sim.dealsync(&["verify", "--from", &from, "--sink", "sqlite:try.db"]).reuse(second.dir).run().await;
    verify.assert_code(3);
    assert_eq!(verify.event("reconciliation")["missing"], serde_json::json!([removed]));
    assert_eq!(verify.event("reconciliation")["extra"], serde_json::json!([]));

    // Promote the custom fields with the block `dealsync fields` prints, then rewrite the range.
    let fields = sim.dealsync(&["fields", "--custom", "--format", "toml"]).run().await;
    fields.assert_code(0);
    std::fs::create_dir_all(verify.dir.path().join("config")).unwrap();
    std::fs::write(verify.dir.path().join("config/dealsync.toml"), &fields.stdout).unwrap();
    let promoted =
        sim.dealsync(&["sync", "--sink", "sqlite:try.db", "--from", &from, "--rewrite"]).reuse(verify.dir).run().await;
    promoted.assert_code(0);
    let db = promoted.dir.path().join("try.db");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM closed_won_deals WHERE is_closed_won = 1 AND is_deleted = 0 AND (region IS NULL OR renewal_date IS NULL OR seats IS NULL)"), 0);
    assert_eq!(promoted.count("rows_inserted"), 1, "the removed row is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_umask_000_nothing_is_created_world_writable_and_an_export_never_writes_through_a_link() {
    let sim = simulator(sim_config(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_dealsync");
    let run_at = |umask: &str, args: &str| {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", &format!("umask {umask}; exec {bin} {args}")]).current_dir(dir.path());
        with_sim(&mut cmd, &sim);
        cmd.env("LOG_FORMAT", "json").output().unwrap()
    };
    let run = |args: &str| run_at("000", args);
    let window = "--from 2026-10-01 --to 2026-11-01";
    assert!(run(&format!("sync {window} --sink sqlite:w.db --metrics-file m.prom")).status.success());
    assert!(run(&format!("sync {window} --sink ndjson:rows.ndjson")).status.success());
    let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("w.db"), 0o600);
    // A umask that takes the owner's write bit away does not make a new warehouse read-only either.
    assert!(run_at("277", &format!("sync {window} --sink sqlite:strict.db")).status.success());
    assert_eq!(mode("strict.db"), 0o600);
    assert_eq!(mode("rows.ndjson"), 0o600);
    assert_eq!(mode("m.prom"), 0o640);

    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("link.ndjson")).unwrap();
    let out = run(&format!("sync {window} --sink ndjson:link.ndjson"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_exchange_never_follows_a_redirect_with_the_grant_code_and_the_client_secret() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_string("{}")).mount(&elsewhere).await;
    let accounts = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", format!("{}/oauth/v2/token", elsewhere.uri())),
        )
        .mount(&accounts)
        .await;
    let out = Dealsync::new(&["auth", "exchange", "--grant-token", "1000.grant-code-secret"])
        .env("ZOHO_ACCOUNTS_URL", &accounts.uri())
        .env("ZOHO_CLIENT_ID", "1000.ID")
        .env("ZOHO_CLIENT_SECRET", "client-secret-kept")
        .run()
        .await;
    assert_ne!(out.code, 0);
    assert!(elsewhere.received_requests().await.unwrap().is_empty(), "the redirect was followed with the secrets");
}
