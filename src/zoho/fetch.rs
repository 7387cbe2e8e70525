//! Pages through every closed-won deal of a window, concurrently and without ever holding the whole result.
//!
//! The search API returns at most 2000 records per criteria and has no total count. A `Modified_Time` window
//! is read in the order of that field (`sort_by=Modified_Time&sort_order=asc`), which lets it go past the cap
//! without planning requests:
//!
//! * the first page of the window is fetched; if Zoho says there is no more, that was the whole window (the
//!   nightly run's usual case: one request). Otherwise the window is counted; up to 2000 deals, the remaining
//!   pages are fetched concurrently. A window longer than `PROBE_SPAN` (a backfill) starts as a chain (below)
//!   at once, with its count beside it for the progress bar and reconciliation;
//! * a bigger window is read as a chain of blocks of 2000: a *probe* asks for the cap's last page (page 10),
//!   whose last record's modification time `t` is where the next block starts (`Modified_Time >= t`; deals
//!   sharing that second come twice and the sinks keep one). Pages 1 to 9 of the block are fetched beside the
//!   next probe, and probes jump the queue, so the chain runs ahead of the pages. A large window with a high
//!   concurrency is cut into a few chains. Requests: one per page plus about two per chain;
//! * the probe checks that the answer really is in that order (the order it reports, and the times it
//!   carries); if not, chaining is switched off for the run and windows are planned as for `Closing_Date`:
//! * a `Closing_Date` window over the cap (search cannot sort on it) is cut into equal parts of about 1800
//!   deals, each counted with COQL and fetched the same way;
//! * deals that cannot be separated (more than 2000 in one second, or one day for `Closing_Date`) are read
//!   through COQL with keyset paging (`id > last`).
//!
//! COQL counts the exact stage while search also returns stages that merely contain "Closed Won", so a count
//! can fall short: the last planned page then says "more records", and the following pages are fetched too.
//! Every task is one request (a COQL read is a sequence of them), at most the client's concurrency run at once,
//! and planning tasks run before pages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::criteria::{closed_won_in, coql_count_closed_won, coql_keyset_page, COQL_FIELDS};
use super::{Page, Record, SearchOrder, ZohoClient, ZohoError};
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
/// The page a chain's probe asks for: the last one the cap allows.
const PROBE_PAGE: u32 = SEARCH_CAP / PER_PAGE;
/// Requests in flight one chain keeps busy: every round trip its probe releases nine pages (and asks the next
/// probe), so one chain can feed about ten; a little less, for slack when answers vary in time.
const REQUESTS_PER_CHAIN: usize = 8;

/// Where a page came from, for logs.
#[derive(Debug, Clone)]
pub enum Origin {
    Search { window: String, page: u32 },
    Coql { window: String, after_id: Option<String> },
}

/// A page handed to the mapping stage.
#[derive(Debug)]
pub struct FetchedPage {
    pub page: Page,
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
    pub probes: u64,
    /// Zoho's count of exact "Closed Won" deals in the whole window, when planning asked for it (backfills, and
    /// windows of more than one page); reconciliation uses it instead of asking again.
    pub root_count: Option<u64>,
}

#[derive(Default)]
struct Counters {
    pages: AtomicU64,
    records: AtomicU64,
    counts: AtomicU64,
    windows_split: AtomicU64,
    coql_pages: AtomicU64,
    probes: AtomicU64,
    root_count: std::sync::OnceLock<u64>,
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
    /// Count the whole window only to know its size (progress, reconciliation), beside chains that need no count.
    Expect(Window),
    /// Pages `from..=to` of a window known to fit the cap; queued as one `Page` task each. `open`: the last one
    /// may say there is more (the plan came from a count), and then the following pages are fetched too.
    Pages { window: Window, from: u32, to: u32, open: bool },
    /// One search page; `last`: the last page of an open plan.
    Page { window: Window, n: u32, last: bool },
    /// The cap's last page of a `Modified_Time` window, in that order: where the next block of the chain starts.
    Probe(Window),
    /// Keyset paging through COQL for a window too dense to cut.
    Coql(Window),
}

/// What a task found: more work, or a reason to stop.
enum Step {
    More(Vec<Task>),
    Stop,
}

pub struct Fetcher<'a, P = FetchedPage> {
    client: &'a ZohoClient,
    tx: mpsc::Sender<P>,
    /// What a page becomes before it goes down the channel: done by the task that fetched it, so that the
    /// answer's text is freed as soon as the page is read (mapping, for a sync).
    stage: Box<dyn Fn(FetchedPage) -> P + Send + Sync + 'a>,
    shutdown: Shutdown,
    concurrency: usize,
    counters: Counters,
    /// Closed-won deals in the whole window, once a count tells (for the progress bar's ETA).
    expected: std::sync::Arc<AtomicU64>,
    /// What a COQL page selects: the standard fields and the promoted ones (search returns every field).
    coql_columns: String,
    /// Whether search answers in the order asked for, so that windows can be chained past the cap; cleared
    /// for the rest of the run as soon as an answer shows otherwise.
    chaining: std::sync::atomic::AtomicBool,
}

impl<'a, P> Fetcher<'a, P> {
    /// A fetcher that sends each page down `tx` as `stage` makes it.
    pub fn new(
        client: &'a ZohoClient,
        tx: mpsc::Sender<P>,
        stage: impl Fn(FetchedPage) -> P + Send + Sync + 'a,
        shutdown: Shutdown,
    ) -> Self {
        let concurrency = client.settings().max_concurrency.max(1);
        let coql_columns = COQL_FIELDS.join(", ");
        Fetcher {
            client,
            tx,
            stage: Box::new(stage),
            shutdown,
            concurrency,
            counters: Counters::default(),
            expected: Default::default(),
            coql_columns,
            chaining: std::sync::atomic::AtomicBool::new(true),
        }
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
        let start = if root.end - root.start <= PROBE_SPAN {
            vec![Task::First(root)]
        } else if self.chains(&root) {
            // A backfill in modification order: chains start at once, the count runs beside them.
            let mut tasks = self.chains_over(root.clone(), self.concurrency.div_ceil(REQUESTS_PER_CHAIN));
            tasks.push(Task::Expect(root));
            tasks
        } else {
            vec![Task::Count { window: root, root: true }]
        };
        let mut queue = VecDeque::from(start);
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
                Some(Ok(Step::More(tasks))) => enqueue(&mut queue, tasks),
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
            probes: c.probes.load(Ordering::Relaxed),
            root_count: c.root_count.get().copied(),
        };
        Ok(Fetched { stats, stopped_early: stopped })
    }

    async fn run(&self, task: Task) -> Result<Step, ZohoError> {
        match task {
            Task::First(w) => self.first(w).await,
            Task::Count { window, root } => self.count(window, root).await,
            Task::Expect(w) => match self.count_of(&w).await? {
                Some(n) => {
                    self.found_root_count(n);
                    Ok(Step::More(vec![]))
                }
                None => Ok(Step::Stop),
            },
            Task::Pages { window, from, to, open } => Ok(Step::More(vec![Task::Pages { window, from, to, open }])),
            Task::Page { window, n, last } => self.page(window, n, last).await,
            Task::Probe(w) => self.probe(w).await,
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
        let Some(first) = self.guarded(self.client.search_page("Deals", &criteria, order_for(&w), 1, PER_PAGE)).await? else {
            return Ok(Step::Stop);
        };
        match first {
            None => Ok(Step::More(vec![])),
            Some(page) if !page.more_records => self.emit(page, Origin::Search { window: w.to_string(), page: 1 }).await,
            // More than one page: whether the rest fits under the cap decides what happens to page 1.
            Some(page) => {
                let Some(n) = self.count_of(&w).await? else { return Ok(Step::Stop) };
                self.found_root_count(n);
                if n > u64::from(SEARCH_CAP) {
                    return Ok(self.cut(w, n));
                }
                let to = pages_for(n).max(2);
                if let Step::Stop = self.emit(page, Origin::Search { window: w.to_string(), page: 1 }).await? {
                    return Ok(Step::Stop);
                }
                Ok(Step::More(vec![Task::Pages { window: w, from: 2, to, open: true }]))
            }
        }
    }

    async fn count(&self, w: Window, root: bool) -> Result<Step, ZohoError> {
        let Some(n) = self.count_of(&w).await? else { return Ok(Step::Stop) };
        if root {
            self.found_root_count(n);
        }
        if n == 0 {
            // COQL sees no exact "Closed Won" here; search may still return look-alike stages, which the
            // mapper would skip anyway.
            return Ok(Step::More(vec![]));
        }
        if n > u64::from(SEARCH_CAP) {
            return Ok(self.cut(w, n));
        }
        Ok(Step::More(vec![Task::Pages { window: w, from: 1, to: pages_for(n), open: true }]))
    }

    fn found_root_count(&self, n: u64) {
        self.expected.store(n, Ordering::Relaxed);
        let _ = self.counters.root_count.set(n);
    }

    async fn count_of(&self, w: &Window) -> Result<Option<u64>, ZohoError> {
        self.counters.counts.fetch_add(1, Ordering::Relaxed);
        self.guarded(self.client.coql_count(&coql_count_closed_won(w))).await
    }

    /// Plans a window of about `n` deals, more than the cap: chains of probes for a `Modified_Time` window
    /// (a few when the concurrency is high enough to keep several busy), otherwise parts of about `PART_TARGET`
    /// that are counted, or COQL when it cannot be cut.
    fn cut(&self, w: Window, n: u64) -> Step {
        if self.chains(&w) {
            let chains = self.concurrency.div_ceil(REQUESTS_PER_CHAIN).min(n.div_ceil(u64::from(SEARCH_CAP)) as usize);
            return Step::More(self.chains_over(w, chains));
        }
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

    /// Probes starting `chains` chains over equal parts of `w` (one when it cannot be cut).
    fn chains_over(&self, w: Window, chains: usize) -> Vec<Task> {
        match w.split_into(chains) {
            Some(pieces) => {
                self.counters.windows_split.fetch_add(1, Ordering::Relaxed);
                pieces.into_iter().map(Task::Probe).collect()
            }
            None => vec![Task::Probe(w)],
        }
    }

    fn chains(&self, w: &Window) -> bool {
        order_for(w) == SearchOrder::ModifiedAsc && self.chaining.load(Ordering::Relaxed)
    }

    /// Fetches page `n`; when it is the last of an open plan and says there is more, plans what follows.
    async fn page(&self, w: Window, n: u32, last: bool) -> Result<Step, ZohoError> {
        let criteria = closed_won_in(&w).to_string();
        let page = match self.guarded(self.client.search_page("Deals", &criteria, order_for(&w), n, PER_PAGE)).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Step::Stop),
            // More matches than the search can return (the CRM changed since the count, or many look-alike
            // stages): read this window again in smaller parts. Rows already sent are upserted idempotently.
            // Only the plan's last page acts on it, so that the window is re-planned once.
            Err(ZohoError::LimitReached { .. }) if last => return Ok(self.cut(w, u64::from(SEARCH_CAP) * 2)),
            Err(ZohoError::LimitReached { .. }) => return Ok(Step::More(vec![])),
            Err(e) => return Err(e),
        };
        let Some(page) = page else { return Ok(Step::More(vec![])) };
        let mut next = Vec::new();
        if last && page.more_records {
            if n < PROBE_PAGE {
                next.push(Task::Pages { window: w.clone(), from: n + 1, to: (n + 2).min(PROBE_PAGE), open: true });
            } else if self.chains(&w) {
                // The cap's last page, in modification order: a probe's answer, without asking again.
                match self.continue_after(&w, &page) {
                    Some(Continue::From(rest)) => next.push(after_block(&w, rest)),
                    None | Some(Continue::Dense(..)) => return Ok(self.cut(w, u64::from(SEARCH_CAP) * 2)),
                }
            } else {
                return Ok(self.cut(w, u64::from(SEARCH_CAP) * 2));
            }
        }
        if let Step::Stop = self.emit(page, Origin::Search { window: w.to_string(), page: n }).await? {
            return Ok(Step::Stop);
        }
        Ok(Step::More(next))
    }

    /// Asks for the cap's last page of a `Modified_Time` window: nothing there means at most 1800 deals, which a
    /// count plans exactly; a last page means the window ends within this block; more than that continues the
    /// chain from the last modification time on the page.
    async fn probe(&self, w: Window) -> Result<Step, ZohoError> {
        self.counters.probes.fetch_add(1, Ordering::Relaxed);
        let criteria = closed_won_in(&w).to_string();
        let page = match self.guarded(self.client.search_page("Deals", &criteria, SearchOrder::ModifiedAsc, PROBE_PAGE, PER_PAGE)).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Step::Stop),
            Err(ZohoError::LimitReached { .. }) => {
                // This account's cap is below 2000: plan with counts.
                self.stop_chaining(&w, "search refused the cap's last page");
                return Ok(Step::More(vec![Task::Count { window: w, root: false }]));
            }
            Err(e) => return Err(e),
        };
        let Some(page) = page else { return Ok(Step::More(vec![Task::Count { window: w, root: false }])) };
        let fill = Task::Pages { window: w.clone(), from: 1, to: PROBE_PAGE - 1, open: false };
        let next = if !page.more_records {
            vec![fill]
        } else {
            match self.continue_after(&w, &page) {
                None => return Ok(Step::More(vec![Task::Count { window: w, root: false }])),
                Some(Continue::Dense(second, rest)) => {
                    tracing::info!(event = "coql_fallback", window = %second,
                        "more than 2000 matches in one second; reading that second through COQL");
                    return Ok(Step::More(rest.into_iter().map(Task::Probe).chain([Task::Coql(second)]).collect()));
                }
                Some(Continue::From(rest)) => vec![fill, after_block(&w, rest)],
            }
        };
        if let Step::Stop = self.emit(page, Origin::Search { window: w.to_string(), page: PROBE_PAGE }).await? {
            return Ok(Step::Stop);
        }
        Ok(Step::More(next))
    }

    /// Where a chain goes on after the cap's last page of `w`, which said there is more. `None` when the page is
    /// not in modification order after all (chaining is then off for the run).
    fn continue_after(&self, w: &Window, page: &Page) -> Option<Continue> {
        let reported_ok = page.sort_by.as_deref().is_none_or(|b| b == "Modified_Time")
            && page.sort_order.as_deref().is_none_or(|o| o.eq_ignore_ascii_case("asc"));
        let last = match (reported_ok, ascending_last_time(page, w)) {
            (true, Some(t)) => t,
            _ => {
                self.stop_chaining(w, "search did not answer in Modified_Time order");
                return None;
            }
        };
        if last > w.start {
            let rest = Window { field: w.field, start: last, end: w.end };
            return Some(Continue::From(rest));
        }
        // The first 2000 deals all carry the window's first second.
        let second = Window { field: w.field, start: w.start, end: (w.start + chrono::TimeDelta::seconds(1)).min(w.end) };
        let rest = (second.end < w.end).then_some(Window { field: w.field, start: second.end, end: w.end });
        Some(Continue::Dense(second, rest))
    }

    fn stop_chaining(&self, w: &Window, why: &str) {
        if self.chaining.swap(false, Ordering::Relaxed) {
            tracing::warn!(event = "chaining_off", window = %w, reason = why,
                "planning the rest of the run with COQL counts (one more request per 1,800 deals)");
        }
    }

    /// Reads a window through COQL, `id > last` at a time.
    async fn coql_window(&self, window: Window) -> Result<Step, ZohoError> {
        let mut after: Option<String> = None;
        loop {
            let query = coql_keyset_page(&self.coql_columns, "=", &window, after.as_deref(), PER_PAGE);
            let Some(page) = self.guarded(self.client.coql(&query)).await? else { return Ok(Step::Stop) };
            let Some(page) = page else { return Ok(Step::More(vec![])) };
            self.counters.coql_pages.fetch_add(1, Ordering::Relaxed);
            let more = page.more_records && page.len() as u32 >= PER_PAGE;
            let last_id = page.last().and_then(|r| record_id(&r));
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
        self.counters.records.fetch_add(page.len() as u64, Ordering::Relaxed);
        tracing::debug!(event = "page", records = page.len(), origin = ?origin);
        match self.tx.send((self.stage)(FetchedPage { page, origin })).await {
            Ok(()) => Ok(Step::More(vec![])),
            // The receiving side stopped (it failed, or a shutdown was asked for).
            Err(_) => Ok(Step::Stop),
        }
    }
}

/// What follows a full block of a chain.
enum Continue {
    /// The rest of the window, from the block's last modification time.
    From(Window),
    /// More than the cap in the window's first second: that second (read through COQL) and the rest, if any.
    Dense(Window, Option<Window>),
}

/// Deals the rest of a chain may be estimated to hold, at most, to be fetched without a probe: with the usual
/// spread that is well under the 1800 an empty probe would show.
const TAIL_ESTIMATE: u64 = 1200;

/// What follows a full block (2000 deals from `block.start` to `rest.start`): the next probe, or, when the rest
/// of the window looks small at the block's density, its pages at once (an open plan, with a quarter and half a
/// page to spare), which saves the chain's end an empty probe and a count. An estimate that falls short is made
/// good by the plan's last page, which asks for the following ones (or probes on from page 10).
fn after_block(block: &Window, rest: Window) -> Task {
    let block_secs = (rest.start - block.start).num_seconds().max(1) as u64;
    let rest_secs = (rest.end - rest.start).num_seconds().max(0) as u64;
    let estimate = u64::from(SEARCH_CAP).saturating_mul(rest_secs) / block_secs;
    if estimate <= TAIL_ESTIMATE {
        let to = pages_for(estimate + estimate / 4 + u64::from(PER_PAGE) / 2);
        Task::Pages { window: rest, from: 1, to, open: true }
    } else {
        Task::Probe(rest)
    }
}

/// Queues tasks: a page plan as one task per page at the back, planning (counts, probes, COQL) at the front,
/// since it releases pages.
fn enqueue(queue: &mut VecDeque<Task>, tasks: Vec<Task>) {
    for task in tasks {
        match task {
            Task::Pages { window, from, to, open } => {
                queue.extend((from..=to).map(|n| Task::Page { window: window.clone(), n, last: open && n == to }))
            }
            Task::Page { .. } => queue.push_back(task),
            planning => queue.push_front(planning),
        }
    }
}

/// The order a window's search pages are asked in: `Modified_Time` windows in that order (so that they can be
/// chained past the cap), others in Zoho's default.
fn order_for(w: &Window) -> SearchOrder {
    if w.field.is_date() {
        SearchOrder::Default
    } else {
        SearchOrder::ModifiedAsc
    }
}

/// The modification time of a page's last record, provided the page is in ascending `Modified_Time` order
/// within `w` (checked on every 16th record and the last, which any other order fails at once).
fn ascending_last_time(page: &Page, w: &Window) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let time = |r: Record| chrono::DateTime::parse_from_rfc3339(&crate::json::string(r.get("Modified_Time")?)?).ok();
    let n = page.len();
    let mut prev = w.start;
    let mut last = None;
    for i in (0..n).step_by(16).chain((n > 0).then(|| n - 1)) {
        let t = time(page.get(i)?)?;
        if t < prev || t >= w.end {
            return None;
        }
        prev = t;
        last = Some(t);
    }
    last
}

/// Search pages needed for `n` records.
fn pages_for(n: u64) -> u32 {
    (n.div_ceil(u64::from(PER_PAGE)) as u32).clamp(1, SEARCH_CAP / PER_PAGE)
}

pub(crate) fn record_id(r: &Record) -> Option<String> {
    Some(r.get("id")?.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowField;

    fn w(from: &str, to: &str) -> Window {
        Window::new(WindowField::ModifiedTime, from.parse().unwrap(), to.parse().unwrap()).unwrap()
    }

    fn page(times: &[&str], sort: Option<(&str, &str)>) -> Page {
        let records: Vec<String> =
            times.iter().enumerate().map(|(i, t)| format!(r#"{{"id":"{i}","Modified_Time":"{t}","Stage":"Closed Won"}}"#)).collect();
        let mut page = Page::of_records(&records, true).unwrap();
        (page.sort_by, page.sort_order) = (sort.map(|s| s.0.into()), sort.map(|s| s.1.into()));
        page
    }

    #[test]
    fn planning_goes_before_pages_and_only_an_open_plans_last_page_may_continue() {
        let win = w("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z");
        let mut queue = VecDeque::new();
        enqueue(&mut queue, vec![Task::Pages { window: win.clone(), from: 1, to: 3, open: false }]);
        enqueue(&mut queue, vec![Task::Pages { window: win.clone(), from: 4, to: 5, open: true }, Task::Probe(win.clone())]);
        let shape: Vec<String> = queue
            .iter()
            .map(|t| match t {
                Task::Probe(_) => "probe".to_string(),
                Task::Page { n, last, .. } => format!("{n}{}", if *last { "!" } else { "" }),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(shape, ["probe", "1", "2", "3", "4", "5!"]);
    }

    #[test]
    fn a_chain_ends_with_pages_when_the_rest_looks_small_at_the_last_blocks_density() {
        // 2000 deals in 10 hours: 2 days more would hold about 9600, so probe on.
        let block = w("2026-10-01T00:00:00Z", "2026-10-05T00:00:00Z");
        let rest = w("2026-10-01T10:00:00Z", "2026-10-03T10:00:00Z");
        assert!(matches!(after_block(&block, rest), Task::Probe(_)));
        // 3 more hours: about 600 deals, fetched as 5 pages (600, a quarter more and half a page: 850), open-ended.
        let rest = w("2026-10-01T10:00:00Z", "2026-10-01T13:00:00Z");
        match after_block(&block, rest.clone()) {
            Task::Pages { window, from: 1, to: 5, open: true } => assert_eq!(window, rest),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_page_in_ascending_modification_order_gives_its_last_time() {
        let win = w("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z");
        let times: Vec<String> = (0..40).map(|i| format!("2026-10-01T{:02}:{:02}:00+05:30", 6 + i / 60, i % 60)).collect();
        let refs: Vec<&str> = times.iter().map(String::as_str).collect();
        let last = ascending_last_time(&page(&refs, Some(("Modified_Time", "asc"))), &win).unwrap();
        assert_eq!(last, chrono::DateTime::parse_from_rfc3339("2026-10-01T06:39:00+05:30").unwrap());
        // Equal times are in order too (deals sharing a second).
        assert!(ascending_last_time(&page(&[refs[3], refs[3], refs[3]], None), &win).is_some());
    }

    #[test]
    fn a_page_out_of_order_or_outside_the_window_gives_nothing() {
        let win = w("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z");
        let mut times: Vec<String> = (0..40).map(|i| format!("2026-10-01T10:{:02}:00Z", i)).collect();
        times.reverse();
        let desc: Vec<&str> = times.iter().map(String::as_str).collect();
        assert_eq!(ascending_last_time(&page(&desc, None), &win), None, "newest first");
        assert_eq!(ascending_last_time(&page(&["2026-09-30T23:59:59Z", "2026-10-01T10:00:00Z"], None), &win), None, "before the window");
        assert_eq!(ascending_last_time(&page(&["2026-10-01T10:00:00Z", "2026-10-02T00:00:00Z"], None), &win), None, "at the (exclusive) end");
        assert_eq!(ascending_last_time(&page(&["2026-10-01T10:00:00Z", "yesterday"], None), &win), None, "unreadable");
    }
}
