//! Pages through every closed-won deal of a window, concurrently and without ever holding the whole result.
//!
//! The search API returns at most 2000 records per criteria and has no total count, so the window is planned
//! with COQL counts (one cheap request per ~9 pages):
//!
//! * the first page of the window is fetched; if Zoho says there is no more, that was the whole window (the
//!   nightly run's usual case: one request). A window longer than `PROBE_SPAN` (a backfill) is counted at once
//!   instead, since its first page would be thrown away;
//! * otherwise the window is counted. Up to 2000 deals, its remaining pages are fetched concurrently. More than
//!   that, it is cut into equal parts of about 1800 deals each (headroom for uneven spread), which are counted
//!   and fetched the same way;
//! * a part that cannot be cut any further (one second, or one day for `Closing_Date`) is read through COQL
//!   with keyset paging (`id > last`).
//!
//! COQL counts the exact stage while search also returns stages that merely contain "Closed Won", so a count
//! can fall short: the last planned page then says "more records", and the following pages are fetched too.
//! Work items run concurrently (at most the client's concurrency); the client caps requests in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::criteria::{closed_won_in, coql_count_closed_won, coql_keyset_page, COQL_FIELDS};
use super::{Page, ZohoClient, ZohoError};
use crate::shutdown::Shutdown;
use crate::window::Window;

/// Records per search page (Zoho's maximum).
pub const PER_PAGE: u32 = 200;
/// Records the search API returns for one criteria at most.
pub const SEARCH_CAP: u32 = 2000;
/// Deals planned per part when a window is cut: 10 % below the cap, for stages COQL does not count.
pub const PART_TARGET: u64 = 1800;
/// Windows up to this long start with their first page; longer ones with a count.
pub const PROBE_SPAN: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// Where a page came from, for logs.
#[derive(Debug, Clone)]
pub enum Origin {
    Search { window: String, page: u32 },
    Coql { window: String, after_id: Option<String> },
}

/// A page handed to the mapping stage.
#[derive(Debug)]
pub struct FetchedPage {
    pub records: Vec<Box<RawValue>>,
    pub origin: Origin,
}

/// What fetching did, for the run summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchStats {
    pub pages: u64,
    pub records: u64,
    pub counts: u64,
    pub windows_split: u64,
    pub coql_pages: u64,
}

#[derive(Default)]
struct Counters {
    pages: AtomicU64,
    records: AtomicU64,
    counts: AtomicU64,
    windows_split: AtomicU64,
    coql_pages: AtomicU64,
}

/// The outcome of `fetch_window`: its statistics, and whether it stopped before the end (the receiver went
/// away, or a shutdown was asked for).
pub struct Fetched {
    pub stats: FetchStats,
    pub stopped_early: bool,
}

/// One unit of fetching work.
#[derive(Debug)]
enum Task {
    /// The first page of a window of unknown size.
    First(Window),
    /// Count a window, then fetch or cut it (`root`: the whole window, whose count the progress bar shows).
    Count { window: Window, root: bool },
    /// Fetch pages `from..=to` of a window known to fit the cap.
    Pages { window: Window, from: u32, to: u32 },
    /// Keyset paging through COQL for a window too dense to cut.
    Coql(Window),
}

/// What a task found: more work, or a reason to stop.
enum Step {
    More(Vec<Task>),
    Stop,
}

pub struct Fetcher<'a> {
    client: &'a ZohoClient,
    tx: mpsc::Sender<FetchedPage>,
    shutdown: Shutdown,
    concurrency: usize,
    counters: Counters,
    /// Closed-won deals in the whole window, once a count tells (for the progress bar's ETA).
    expected: std::sync::Arc<AtomicU64>,
    /// What a COQL page selects: the standard fields and the promoted ones (search returns every field).
    coql_columns: String,
}

impl<'a> Fetcher<'a> {
    pub fn new(client: &'a ZohoClient, tx: mpsc::Sender<FetchedPage>, shutdown: Shutdown) -> Self {
        let concurrency = client.settings().max_concurrency.max(1);
        let coql_columns = COQL_FIELDS.join(", ");
        Fetcher { client, tx, shutdown, concurrency, counters: Counters::default(), expected: Default::default(), coql_columns }
    }

    /// Adds the promoted fields to what COQL pages select.
    pub fn promoted(mut self, promoted: &[crate::mapping::promoted::Promoted]) -> Self {
        let mut fields: Vec<&str> = COQL_FIELDS.to_vec();
        for p in promoted {
            if !fields.contains(&p.field) {
                fields.push(p.field);
            }
        }
        self.coql_columns = fields.join(", ");
        self
    }

    /// Shares the expected number of deals with a progress display.
    pub fn expected(mut self, expected: std::sync::Arc<AtomicU64>) -> Self {
        self.expected = expected;
        self
    }

    /// Sends every closed-won candidate of `root` down the channel, page by page.
    pub async fn fetch_window(self, root: Window) -> Result<Fetched, ZohoError> {
        let start = if root.end - root.start > PROBE_SPAN { Task::Count { window: root, root: true } } else { Task::First(root) };
        let mut queue = VecDeque::from([start]);
        let mut running = FuturesUnordered::new();
        let mut stopped = false;
        loop {
            while running.len() < self.concurrency {
                let Some(task) = queue.pop_front() else { break };
                running.push(self.run(task));
            }
            match running.next().await {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(Step::More(tasks))) => queue.extend(tasks),
                Some(Ok(Step::Stop)) => {
                    stopped = true;
                    break;
                }
            }
        }
        drop(running);
        let c = &self.counters;
        let stats = FetchStats {
            pages: c.pages.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            counts: c.counts.load(Ordering::Relaxed),
            windows_split: c.windows_split.load(Ordering::Relaxed),
            coql_pages: c.coql_pages.load(Ordering::Relaxed),
        };
        Ok(Fetched { stats, stopped_early: stopped })
    }

    async fn run(&self, task: Task) -> Result<Step, ZohoError> {
        match task {
            Task::First(w) => self.first(w).await,
            Task::Count { window, root } => self.count(window, root).await,
            Task::Pages { window, from, to } => self.pages(window, from, to).await,
            Task::Coql(w) => self.coql_window(w).await,
        }
    }

    /// Runs a request unless a shutdown comes first; `None` means stop.
    async fn guarded<T>(&self, fut: impl std::future::Future<Output = Result<T, ZohoError>>) -> Result<Option<T>, ZohoError> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait() => Ok(None),
            r = fut => r.map(Some),
        }
    }

    async fn first(&self, w: Window) -> Result<Step, ZohoError> {
        let criteria = closed_won_in(&w).to_string();
        let Some(first) = self.guarded(self.client.search_page("Deals", &criteria, 1, PER_PAGE)).await? else {
            return Ok(Step::Stop);
        };
        match first {
            None => Ok(Step::More(vec![])),
            Some(page) if !page.more_records => self.emit(page, Origin::Search { window: w.to_string(), page: 1 }).await,
            // More than one page: whether the rest fits under the cap decides what happens to page 1.
            Some(page) => {
                let Some(n) = self.count_of(&w).await? else { return Ok(Step::Stop) };
                self.expected.store(n, Ordering::Relaxed);
                if n > u64::from(SEARCH_CAP) {
                    return Ok(self.cut(w, n));
                }
                let to = pages_for(n).max(2);
                if let Step::Stop = self.emit(page, Origin::Search { window: w.to_string(), page: 1 }).await? {
                    return Ok(Step::Stop);
                }
                Ok(Step::More(vec![Task::Pages { window: w, from: 2, to }]))
            }
        }
    }

    async fn count(&self, w: Window, root: bool) -> Result<Step, ZohoError> {
        let Some(n) = self.count_of(&w).await? else { return Ok(Step::Stop) };
        if root {
            self.expected.store(n, Ordering::Relaxed);
        }
        if n == 0 {
            // COQL sees no exact "Closed Won" here; search may still return look-alike stages, which the
            // mapper would skip anyway.
            return Ok(Step::More(vec![]));
        }
        if n > u64::from(SEARCH_CAP) {
            return Ok(self.cut(w, n));
        }
        Ok(Step::More(vec![Task::Pages { window: w, from: 1, to: pages_for(n) }]))
    }

    async fn count_of(&self, w: &Window) -> Result<Option<u64>, ZohoError> {
        self.counters.counts.fetch_add(1, Ordering::Relaxed);
        self.guarded(self.client.coql_count(&coql_count_closed_won(w))).await
    }

    /// Cuts a window of `n` deals into parts of about `PART_TARGET`, or reads it through COQL.
    fn cut(&self, w: Window, n: u64) -> Step {
        let parts = n.div_ceil(PART_TARGET) as usize;
        match w.split_into(parts) {
            Some(pieces) => {
                self.counters.windows_split.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event = "window_split", window = %w, deals = n, parts = pieces.len(), "cutting a window over the search cap");
                Step::More(pieces.into_iter().map(|window| Task::Count { window, root: false }).collect())
            }
            None => {
                tracing::info!(event = "coql_fallback", window = %w, deals = n,
                    "more than 2000 matches in a window that cannot be cut; reading it through COQL");
                Step::More(vec![Task::Coql(w)])
            }
        }
    }

    /// Fetches pages `from..=to` concurrently; continues past `to` when the last page says there is more.
    async fn pages(&self, w: Window, from: u32, to: u32) -> Result<Step, ZohoError> {
        let criteria = closed_won_in(&w).to_string();
        let mut fetches: FuturesUnordered<_> = (from..=to)
            .map(|n| {
                let criteria = &criteria;
                async move { (n, self.guarded(self.client.search_page("Deals", criteria, n, PER_PAGE)).await) }
            })
            .collect();
        let mut more_after_last = false;
        let mut limit_reached = false;
        while let Some((n, result)) = fetches.next().await {
            let page = match result {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(Step::Stop),
                Err(ZohoError::LimitReached { .. }) => {
                    limit_reached = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(page) = page else { continue };
            if n == to && page.more_records {
                more_after_last = true;
            }
            if let Step::Stop = self.emit(page, Origin::Search { window: w.to_string(), page: n }).await? {
                return Ok(Step::Stop);
            }
        }
        if limit_reached || (more_after_last && to >= SEARCH_CAP / PER_PAGE) {
            // More matches than the search can return (the CRM changed since the count, or many look-alike
            // stages): read this window again in smaller parts. Rows already sent are upserted idempotently.
            return Ok(self.cut(w, u64::from(SEARCH_CAP) * 2));
        }
        if more_after_last {
            let next_to = (to + 2).min(SEARCH_CAP / PER_PAGE);
            return Ok(Step::More(vec![Task::Pages { window: w, from: to + 1, to: next_to }]));
        }
        Ok(Step::More(vec![]))
    }

    /// Reads a window through COQL, `id > last` at a time.
    async fn coql_window(&self, window: Window) -> Result<Step, ZohoError> {
        let mut after: Option<String> = None;
        loop {
            let query = coql_keyset_page(&self.coql_columns, "=", &window, after.as_deref(), PER_PAGE);
            let Some(page) = self.guarded(self.client.coql(&query)).await? else { return Ok(Step::Stop) };
            let Some(page) = page else { return Ok(Step::More(vec![])) };
            self.counters.coql_pages.fetch_add(1, Ordering::Relaxed);
            let more = page.more_records && page.records.len() as u32 >= PER_PAGE;
            let last_id = page.records.last().and_then(|r| record_id(r));
            let origin = Origin::Coql { window: window.to_string(), after_id: after.clone() };
            if let Step::Stop = self.emit(page, origin).await? {
                return Ok(Step::Stop);
            }
            match (more, last_id) {
                (true, Some(id)) => after = Some(id),
                (true, None) => {
                    return Err(ZohoError::InvalidBody {
                        what: format!("COQL read of {window}"),
                        status: 200,
                        reason: "the last record of a full page has no readable id, so paging cannot continue".into(),
                    })
                }
                (false, _) => return Ok(Step::More(vec![])),
            }
        }
    }

    async fn emit(&self, page: Page, origin: Origin) -> Result<Step, ZohoError> {
        self.counters.pages.fetch_add(1, Ordering::Relaxed);
        self.counters.records.fetch_add(page.records.len() as u64, Ordering::Relaxed);
        tracing::debug!(event = "page", records = page.records.len(), origin = ?origin);
        match self.tx.send(FetchedPage { records: page.records, origin }).await {
            Ok(()) => Ok(Step::More(vec![])),
            // The receiving side stopped (it failed, or a shutdown was asked for).
            Err(_) => Ok(Step::Stop),
        }
    }
}

/// Search pages needed for `n` records.
fn pages_for(n: u64) -> u32 {
    (n.div_ceil(u64::from(PER_PAGE)) as u32).clamp(1, SEARCH_CAP / PER_PAGE)
}

pub(crate) fn record_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let rec: IdOnly = serde_json::from_str(raw.get()).ok()?;
    let id = rec.id?.get();
    Some(id.trim_matches('"').to_string())
}
