//! The SQLite warehouse is checked before the first Zoho request: a file dealsync cannot write, or a table whose
//! columns do not fit its rows, stops the run with exit 78 naming the culprit, fetching nothing and changing
//! nothing; `dealsync check` says exactly the same.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::helpers::*;

const OCTOBER: [&str; 5] = ["sync", "--from", "2026-10-01", "--to", "2026-10-15"];

fn columns(db: &std::path::Path, table: &str) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c.prepare(&format!("PRAGMA table_info({table})")).unwrap();
    stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

fn tables(db: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_table_stops_the_run_before_any_request_and_is_left_as_it_was() {
    let sim = simulator(sim_config(500)).await;
    for (ddl, culprit) in [
        ("CREATE TABLE closed_won_deals (deal_id TEXT, amount REAL, note TEXT)", "closed_won_deals.amount is REAL"),
        (
            "CREATE TABLE closed_won_deals (deal_id INTEGER PRIMARY KEY, amount BLOB, modified_time INTEGER)",
            "closed_won_deals.deal_id is INTEGER",
        ),
        ("CREATE TABLE closed_won_deals (deal_id TEXT, note TEXT NOT NULL)", "closed_won_deals.note is NOT NULL"),
        ("CREATE TABLE _dealsync_runs (run_id INTEGER, foo TEXT)", "_dealsync_runs.run_id is INTEGER"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("dealsync.db");
        rusqlite::Connection::open(&db).unwrap().execute_batch(ddl).unwrap();
        let (tables_before, table) = (tables(&db), tables(&db)[0].clone());
        let columns_before = columns(&db, &table);
        let requests_before = sim.stats().token_requests + sim.stats().api_requests;

        let out = Dealsync::new(&OCTOBER).against(&sim).reuse(dir).run().await;
        out.assert_code(78);
        assert!(out.summary()["error"].as_str().unwrap().contains(culprit), "{culprit}: {}", out.stderr);
        assert_eq!(
            sim.stats().token_requests + sim.stats().api_requests,
            requests_before,
            "{culprit}: nothing fetched"
        );
        assert_eq!(tables(&db), tables_before, "{culprit}: no table created");
        assert_eq!(columns(&db, &table), columns_before, "{culprit}: the table is unchanged");

        let check = Dealsync::new(&["check", "--sink", "sqlite:dealsync.db"]).against(&sim).reuse(out.dir).run().await;
        check.assert_code(78);
        assert!(check.stdout.contains("FAIL") && check.stdout.contains(culprit), "{culprit}: {}", check.stdout);
        assert_eq!(columns(&db, &table), columns_before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compatible_older_table_gains_its_missing_columns_in_one_step() {
    let sim = simulator(sim_config(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dealsync.db");
    // A table of the required columns only, as an early version might have left it.
    let required: Vec<String> = dealsync::schema::columns(&[])
        .iter()
        .filter(|c| c.kept == dealsync::schema::Kept::Required)
        .map(|c| format!("{} {}", c.name, c.sqlite_definition()))
        .collect();
    let ddl = format!("CREATE TABLE closed_won_deals ({})", required.join(", "));
    rusqlite::Connection::open(&db).unwrap().execute_batch(&ddl).unwrap();
    let check = Dealsync::new(&["check", "--sink", "sqlite:dealsync.db"]).against(&sim).reuse(dir).run().await;
    check.assert_code(0);
    assert!(check.stdout.contains("the next run adds the columns closed_won_deals."), "{}", check.stdout);
    let out = Dealsync::new(&OCTOBER).against(&sim).reuse(check.dir).run().await;
    out.assert_code(0);
    assert_eq!(columns(&db, "closed_won_deals").len(), dealsync::schema::columns(&[]).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_warehouse_stops_the_run_before_any_request_and_check_says_so() {
    let sim = simulator(sim_config(500)).await;
    let first = Dealsync::new(&OCTOBER).against(&sim).run().await;
    first.assert_code(0);
    let dir = first.dir.path().to_path_buf();
    let db = first.db();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = sim.stats().token_requests + sim.stats().api_requests;

    // root writes whatever the mode bits say: run as nobody then, as a read-only warehouse is met in production.
    let as_reader = |args: &[&str]| {
        let bin = env!("CARGO_BIN_EXE_dealsync");
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else {
            Command::new(bin)
        };
        with_sim(&mut cmd, &sim)
            .args(args)
            .current_dir(&dir)
            .env("LOG_FORMAT", "json")
            .env_remove("BIGQUERY_PROJECT")
            .env_remove("BIGQUERY_EMULATOR_HOST")
            .output()
            .unwrap()
    };
    let out = as_reader(&OCTOBER);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("dealsync.db cannot be written"), "{stderr}");
    assert_eq!(sim.stats().token_requests + sim.stats().api_requests, before, "nothing fetched");

    let check = as_reader(&["check", "--sink", "sqlite:dealsync.db"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("FAIL") && stdout.contains("cannot be written"), "{stdout}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_that_runs_out_of_space_counts_only_the_rows_it_holds() {
    use std::os::unix::process::CommandExt;
    let sim = simulator(sim_config(6000)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealsync"));
    with_sim(&mut cmd, &sim)
        .args(["sync", "--from", "2026-10-01", "--to", "2026-11-01"])
        .current_dir(dir.path())
        .env("LOG_FORMAT", "json")
        .env_remove("BIGQUERY_PROJECT")
        .env_remove("BIGQUERY_EMULATOR_HOST");
    // A disk that fills up: no file of the process may grow past 1 MiB (writes past it fail with EFBIG, as they
    // fail with ENOSPC on a full disk; the signal that would kill the process is ignored, as a full disk sends none).
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit { rlim_cur: 1 << 20, rlim_max: 1 << 20 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "the window does not fit in 1 MiB: {stderr}");
    let summary: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "run_summary")
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let held = query_i64(&dir.path().join("dealsync.db"), "SELECT count(*) FROM closed_won_deals");
    assert_eq!(summary["rows_inserted"].as_i64().unwrap(), held, "the summary counts the rows the file holds");
    assert!(summary["error"].as_str().unwrap().contains("dealsync.db"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_local_database_exits_78_as_the_readme_says() {
    let sim = simulator(sim_config(100)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dealsync.db"), vec![0x5a; 40_000]).unwrap();
    let out = Dealsync::new(&OCTOBER).against(&sim).reuse(dir).run().await;
    out.assert_code(78);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = readme.lines().find(|l| l.starts_with("| 78 |")).unwrap();
    assert!(row.contains("corrupt"), "{row}");
}
