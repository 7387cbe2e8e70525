//! A Zoho-compatible CRM simulator on loopback: the token endpoint, v8 search with a real criteria parser and
//! the 2000-record cap, a COQL subset, fields metadata, 204s, scope and token checks, and configurable
//! latency. It is a product feature (`dealsync simulate`, `dealsync sync --demo`) and the backbone of the
//! tests, which read the truth they should end up with straight from it.

#[cfg(feature = "cli")]
pub mod cli;
pub mod coql;
pub mod criteria;
pub mod data;
pub mod faults;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::serve::ListenerExt;
use chrono::{DateTime, Duration, DurationRound, FixedOffset, Utc};
use tokio::sync::oneshot;

pub use data::{Broken, SimDeal};

/// The deal field a range of deals is selected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DealField {
    ModifiedTime,
    ClosingDate,
}

/// A half-open range `[start, end)` over a deal field: what a correct sync of that window must end up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub field: DealField,
    pub start: DateTime<FixedOffset>,
    pub end: DateTime<FixedOffset>,
}

impl Range {
    pub fn modified(start: DateTime<FixedOffset>, end: DateTime<FixedOffset>) -> Range {
        Range { field: DealField::ModifiedTime, start, end }
    }
}

/// Everything that shapes a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub deals: usize,
    pub seed: u64,
    /// Deals are modified within `[anchor - span, anchor)`.
    pub anchor: DateTime<Utc>,
    pub span: Duration,
    /// Closed-won deals rendered so that they cannot be mapped.
    pub broken: usize,
    /// Added to every answer.
    pub latency: std::time::Duration,
    /// The API user's time zone: every datetime is rendered with this offset.
    pub tz: FixedOffset,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// The Self Client grant code that `authorization_code` exchanges for `refresh_token`.
    pub grant_code: String,
    /// `expires_in` of minted tokens.
    pub token_ttl: std::time::Duration,
    /// Mints allowed per refresh token in 10 minutes before "Access Denied".
    pub mint_limit: usize,
    /// HTTP status of the "Access Denied" throttle answer (Zoho has been seen sending 200 and 400).
    pub throttle_status: u16,
    /// Records one search criteria may return at most.
    pub search_cap: usize,
    /// Scopes the minted tokens lack (e.g. `ZohoSearch.securesearch.READ`).
    pub missing_scopes: Vec<String>,
    /// The window over which `mint_limit` applies (Zoho: 10 minutes).
    pub mint_window: std::time::Duration,
    /// Faults injected into API requests.
    pub faults: faults::FaultPlan,
    /// Share of deals generated as exactly "Closed Won" (the rest: other stages and look-alikes).
    pub won_share: f64,
    /// Search ignores `sort_by`/`sort_order` and answers in its default order (id, newest first), as an API
    /// version without sorting would; dealsync must notice and plan with counts instead.
    pub ignores_sort: bool,
    /// A conditional request (`If-Modified-Since`) for deleted records that finds nothing newer is answered
    /// `304 Not Modified` with an empty body, as HTTP allows (on by default: a real server may do it); off, it
    /// is answered 204.
    pub not_modified: bool,
    /// Search returns deals sharing a sort key in another order on each request, as a database does for `ORDER
    /// BY` on a column that is not unique, with offsets, and no tie-breaker.
    pub shuffled_ties: bool,
    /// Search does not see a deal until this long after its last modification (by the wall clock), as Zoho's
    /// lagging search index; COQL and records by id see it at once.
    pub search_lag: std::time::Duration,
    /// Closed-won deals that await approval: search leaves them out unless asked for `approved=both`.
    pub awaiting_approval: usize,
    /// Deals re-modified (now) every second while the simulator runs, as users editing the CRM during a sync.
    pub edits_per_second: u32,
    /// The first this many closed-won deals asked for by id change just before the answer, alternately lost
    /// (`Closed Lost`, modified now) and deleted, as users editing the CRM between a sync's id listing and its
    /// by-id read.
    pub changed_before_by_id: usize,
}

impl SimConfig {
    /// The demo's dataset: deals over the last 30 days, anchored at the start of the current UTC hour, so
    /// that an immediate re-run sees exactly the same deals.
    pub fn demo(deals: usize, seed: u64) -> SimConfig {
        let anchor = Utc::now().duration_trunc(Duration::hours(1)).expect("truncation to an hour");
        SimConfig { deals, seed, anchor, ..SimConfig::default() }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            deals: 1000,
            seed: 1,
            anchor: DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").expect("valid").with_timezone(&Utc),
            span: Duration::days(30),
            broken: 0,
            latency: std::time::Duration::ZERO,
            tz: FixedOffset::east_opt(5 * 3600 + 1800).expect("valid offset"),
            client_id: "1000.SIMCLIENTID".into(),
            client_secret: "sim-client-secret".into(),
            refresh_token: "1000.sim-refresh-token".into(),
            grant_code: "1000.sim-grant-code".into(),
            token_ttl: std::time::Duration::from_secs(3600),
            mint_limit: 10,
            throttle_status: 200,
            search_cap: 2000,
            missing_scopes: Vec::new(),
            mint_window: std::time::Duration::from_secs(600),
            faults: faults::FaultPlan::default(),
            won_share: 0.3,
            ignores_sort: false,
            not_modified: true,
            shuffled_ties: false,
            search_lag: std::time::Duration::ZERO,
            awaiting_approval: 0,
            edits_per_second: 0,
            changed_before_by_id: 0,
        }
    }
}

/// Request counters, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct SimCounters {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    pub token_requests: AtomicU64,
    pub api_requests: AtomicU64,
    pub search_requests: AtomicU64,
    pub coql_requests: AtomicU64,
    /// `304 Not Modified` answers to conditional requests.
    pub not_modified: AtomicU64,
    pub faults_injected: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub faults_by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// TCP connections the simulator accepted: a client that keeps its connections alive opens about one per
    /// request it has in flight, not one per request.
    pub connections: u64,
    pub token_requests: u64,
    pub api_requests: u64,
    pub search_requests: u64,
    pub coql_requests: u64,
    pub not_modified: u64,
    pub faults_injected: u64,
    /// The most API requests the simulator was serving at once.
    pub max_in_flight: u64,
    pub faults_by_kind: std::collections::BTreeMap<&'static str, u64>,
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    pub addr: SocketAddr,
    state: Arc<server::SimState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    pub fn stats(&self) -> SimStats {
        let c = &self.state.counters;
        SimStats {
            connections: c.connections.load(Ordering::Relaxed),
            token_requests: c.token_requests.load(Ordering::Relaxed),
            api_requests: c.api_requests.load(Ordering::Relaxed),
            search_requests: c.search_requests.load(Ordering::Relaxed),
            coql_requests: c.coql_requests.load(Ordering::Relaxed),
            not_modified: c.not_modified.load(Ordering::Relaxed),
            faults_injected: c.faults_injected.load(Ordering::Relaxed),
            max_in_flight: c.max_in_flight.load(Ordering::Relaxed),
            faults_by_kind: c.faults_by_kind.lock().expect("not poisoned").clone(),
        }
    }

    /// The deals whose stage is exactly "Closed Won" and whose window field lies in the window: what a correct
    /// sync must end up with (rows for the mappable ones, quarantine for the broken ones).
    pub fn closed_won_in(&self, window: &Range) -> Vec<SimDeal> {
        self.state.closed_won_in(window)
    }

    /// Deals the simulator re-modified by itself so far (`edits_per_second`), in order.
    pub fn edited(&self) -> Vec<u64> {
        self.state.edited.lock().expect("not poisoned").clone()
    }

    /// Changes the stored deals (a deal won, reopened, edited or deleted in the CRM); order is restored after.
    pub fn mutate<F: FnOnce(&mut Vec<SimDeal>)>(&self, f: F) {
        let mut deals = self.state.deals.write().expect("not poisoned");
        f(&mut deals);
        // Any deal may have changed: render them afresh.
        deals.iter_mut().for_each(|d| d.rendered = Default::default());
        deals.sort_by_key(|d| (d.modified, d.id));
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Generates the dataset and serves it on `addr` (port 0 picks a free port).
pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(server::SimState::new(config, format!("http://{addr}")));
    let app = server::router(state.clone());
    let counted = state.clone();
    let listener = listener.tap_io(move |_| {
        counted.counters.connections.fetch_add(1, Ordering::Relaxed);
    });
    let (tx, rx) = oneshot::channel::<()>();
    let editor = state.clone();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if editor.config.edits_per_second == 0 {
            let _ = serve.await;
            return;
        }
        // Edits go on while the server runs, and stop with it.
        tokio::select! {
            _ = serve => {}
            () = server::edit_every_second(editor) => {}
        }
    });
    Ok(SimHandle { addr, state, shutdown: Some(tx), task: Some(task) })
}
