//! Shared test plumbing: start a simulator, run the real binary against it, read what it wrote.

use std::path::{Path, PathBuf};

use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use dealsync::mapping::{Columns, Mapped, Mapper, RunStamp};
use dealsync::window::{Window, WindowField};
use dealsync::zoho::Page;
use dealsync_sim::{self as sim, SimConfig, SimDeal, SimHandle};
use serde_json::Value;

/// The simulator's truth for one of dealsync's windows.
pub trait Truth {
    /// The deals whose stage is exactly "Closed Won" and whose window field lies in `w`.
    fn closed_won(&self, w: &Window) -> Vec<SimDeal>;
}

impl Truth for SimHandle {
    fn closed_won(&self, w: &Window) -> Vec<SimDeal> {
        let field = match w.field {
            WindowField::ModifiedTime => sim::DealField::ModifiedTime,
            WindowField::ClosingDate => sim::DealField::ClosingDate,
        };
        self.closed_won_in(&sim::Range { field, start: w.start, end: w.end })
    }
}

/// Starts a simulator on a free loopback port.
pub async fn simulator(config: SimConfig) -> SimHandle {
    sim::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("the simulator starts")
}

/// A simulator config with `deals` deals, modified over October 2026 unless changed.
pub fn sim_config(deals: usize) -> SimConfig {
    SimConfig { deals, seed: 11, ..SimConfig::default() }
}

pub fn at(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap()
}

pub fn window(from: &str, to: &str) -> Window {
    Window::new(WindowField::ModifiedTime, at(from), at(to)).unwrap()
}

/// One invocation of the `dealsync` binary, with a clean environment (no ZOHO_*, BIGQUERY_* or log settings
/// leak in from the machine) and its own working directory.
pub struct Dealsync {
    cmd: Command,
    dir: tempfile::TempDir,
}

impl Dealsync {
    pub fn new(args: &[&str]) -> Dealsync {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealsync"));
        cmd.args(args).current_dir(dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ZOHO_")
                || k.starts_with("BIGQUERY_")
                || k.starts_with("DEALSYNC_")
                || k == "LOG_FORMAT"
                || k == "RUST_LOG"
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("LOG_FORMAT", "json");
        Dealsync { cmd, dir }
    }

    /// Credentials and accounts URL of `sim`.
    pub fn against(mut self, sim: &SimHandle) -> Dealsync {
        with_sim(&mut self.cmd, sim);
        self
    }

    /// Runs in the working directory of an earlier run (same ./dealsync.db, same ledger).
    pub fn reuse(mut self, dir: tempfile::TempDir) -> Dealsync {
        self.cmd.current_dir(dir.path());
        self.dir = dir;
        self
    }

    pub fn args(mut self, args: &[&str]) -> Dealsync {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Dealsync {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Dealsync {
        self.cmd.env_remove(k);
        self
    }

    /// Runs the binary off the async runtime, so that an in-process simulator keeps serving.
    pub async fn run(self) -> Outcome {
        let Dealsync { mut cmd, dir } = self;
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs")).await.unwrap();
        Outcome::new(out, dir)
    }
}

/// A run in progress, for signal tests.
pub struct Running {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Dealsync {
    pub fn spawn(self) -> Running {
        let Dealsync { mut cmd, dir } = self;
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        Running { child: cmd.spawn().expect("the binary starts"), dir }
    }
}

impl Running {
    /// Sends a signal by name (TERM, INT, KILL).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success() || name == "KILL");
    }

    /// The run's working directory (its ./dealsync.db).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub async fn wait(self) -> Outcome {
        let Running { child, dir } = self;
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        Outcome::new(out, dir)
    }
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub dir: tempfile::TempDir,
}

impl Outcome {
    fn new(out: std::process::Output, dir: tempfile::TempDir) -> Outcome {
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            dir,
        }
    }

    /// Every JSON log line on stderr.
    pub fn events(&self) -> Vec<Value> {
        self.stderr.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
    }

    pub fn event(&self, name: &str) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no `{name}` event in:\n{}", self.stderr))
    }

    pub fn summary(&self) -> Value {
        self.event("run_summary")
    }

    pub fn count(&self, name: &str) -> u64 {
        self.summary()[name].as_u64().unwrap_or_else(|| panic!("summary has no {name}: {}", self.stderr))
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("dealsync.db")
    }

    /// The demo's own warehouse (`sync --demo` never writes ./dealsync.db).
    pub fn demo_db(&self) -> PathBuf {
        self.dir.path().join("dealsync-demo.db")
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Deal ids in the warehouse table.
pub fn warehouse_ids(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c.prepare("SELECT deal_id FROM closed_won_deals ORDER BY deal_id").unwrap();
    let ids = s.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect();
    ids
}

pub fn query_i64(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The ids a correct sync of `w` must write (the mappable closed-won deals), sorted.
pub fn expected_ids(sim: &SimHandle, w: &Window) -> Vec<String> {
    let mut ids: Vec<String> =
        sim.closed_won(w).into_iter().filter(|d| d.broken.is_none()).map(|d| d.id.to_string()).collect();
    ids.sort();
    ids
}

pub fn utc(s: &str) -> DateTime<Utc> {
    at(s).with_timezone(&Utc)
}

/// A run's stamp: this run id, synced now, the standard columns.
pub fn stamp(run_id: &str) -> RunStamp {
    RunStamp { run_id: run_id.into(), synced_at: Utc::now(), columns: Arc::new(Columns::new(&[])) }
}

/// Maps one record given as JSON text, as a sync maps the records of a page. Panics unless `text` is one JSON
/// value.
pub fn map_json(text: &str, stamp: &RunStamp) -> Mapped {
    match Page::of_records([text], false) {
        Ok(page) if page.len() == 1 => Mapper::new(stamp).map(&page.get(0).expect("one record")),
        _ => panic!("map_json needs one JSON value, got {text:?}"),
    }
}

/// Points a command of one's own (run through `script`, as another user, with limits) at `sim`: its accounts
/// URL and credentials.
pub fn with_sim<'c>(cmd: &'c mut Command, sim: &SimHandle) -> &'c mut Command {
    let c = sim.config();
    cmd.env("ZOHO_ACCOUNTS_URL", sim.base_url())
        .env("ZOHO_CLIENT_ID", &c.client_id)
        .env("ZOHO_CLIENT_SECRET", &c.client_secret)
        .env("ZOHO_REFRESH_TOKEN", &c.refresh_token)
}

/// An `Authorization` header for calling `sim` directly.
pub async fn sim_auth(sim: &SimHandle) -> String {
    let cfg = sim.config();
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/oauth/v2/token", sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("refresh_token", &cfg.refresh_token),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    format!("Zoho-oauthtoken {}", token["access_token"].as_str().unwrap())
}

/// A wiremock Zoho for a one-day window: a token, one search page of `records` (no more), Zoho's COQL count of
/// `count` closed-won deals, and `deleted` (204 or 304) to the deletions listing.
pub async fn one_page_zoho(records: &[String], count: usize, deleted: u16) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let token = format!(r#"{{"access_token":"1000.a","expires_in":3600,"api_domain":"{}"}}"#, server.uri());
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(token, "application/json"))
        .mount(&server)
        .await;
    let page = format!(r#"{{"data":[{}],"info":{{"page":1,"more_records":false}}}}"#, records.join(","));
    Mock::given(method("GET"))
        .and(path("/crm/v8/Deals/search"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(page, "application/json"))
        .mount(&server)
        .await;
    let counted = format!(r#"{{"data":[{{"COUNT(id)":{count}}}],"info":{{"count":1,"more_records":false}}}}"#);
    Mock::given(method("POST"))
        .and(path("/crm/v8/coql"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(counted, "application/json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/crm/v8/Deals/deleted"))
        .respond_with(ResponseTemplate::new(deleted))
        .mount(&server)
        .await;
    server
}

/// A sync of 2026-10-01 against `one_page_zoho` into `sink`.
pub fn sync_one_day(server: &wiremock::MockServer, sink: &str) -> Dealsync {
    Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-10-02", "--sink", sink])
        .env("ZOHO_ACCOUNTS_URL", &server.uri())
        .env("ZOHO_CLIENT_ID", "1000.X")
        .env("ZOHO_CLIENT_SECRET", "s")
        .env("ZOHO_REFRESH_TOKEN", "1000.r")
}
