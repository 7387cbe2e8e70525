//! Fetches every closed-won deal of a window, concurrently and without holding the whole result, relying on
//! nothing Zoho leaves undocumented about the order of search results (ties on the sort key, or an edit while a
//! run pages, make page 2 of a criteria skip what page 1 did not show). So no criteria is read past its first
//! page: the window is counted (COQL) and cut into slices; each slice is read one page at a time, each page a new
//! criteria starting from the last `Modified_Time` second the previous page proved complete (when the answer is
//! in the ascending order asked for; otherwise slices are cut to about `SLICE_TARGET` deals). A slice that
//! cannot be cut (one second, or one day for `Closing_Date`) holding more than a page is listed by id through
//! COQL keyset paging and read by id. What search still misses is found by the run's completeness check
//! (`fetch_ids`). A begun slice's next page goes before a new slice's first, so rows arrive near window order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, FixedOffset};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::criteria::{closed_won_in, coql_count_closed_won, coql_keyset_page};
use super::{record_id, Members, Page, Record, SearchOrder, ZohoClient, ZohoError};
use crate::shutdown::Shutdown;
use crate::window::Window;

/// Records per search page (Zoho's maximum).
pub const PER_PAGE: u32 = 200;
/// Closed-won deals a slice is cut to once search has shown it ignores the order asked for: a page's worth,
/// less room for look-alike stages (which search returns and COQL does not count) and an uneven spread.
pub const SLICE_TARGET: u64 = 150;
/// Slices per request in flight: enough to keep every permit busy while the slices' reads end at different
/// times, few enough that each slice's last, partly filled page costs little.
pub const SLICES_PER_REQUEST: usize = 4;
/// Ids per `GET /Deals?ids=` (Zoho's maximum).
pub const IDS_PER_REQUEST: usize = 100;
/// Fields per `GET /Deals?ids=` (Zoho's maximum).
pub const FIELDS_PER_REQUEST: usize = 50;

/// Where a page came from, for logs.
#[derive(Debug, Clone)]
pub enum Origin {
    Search { window: String },
    ById { ids: usize },
}

/// A page handed to the mapping stage.
#[derive(Debug)]
pub struct FetchedPage {
    pub page: Page,
    pub origin: Origin,
    /// Only the first `keep` records belong to the slice: the answer was in modification order, and the records
    /// of its last second are read again with the rest of the slice.
    pub keep: Option<usize>,
}

/// What fetching did, for the run summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchStats {
    /// Pages of records handed on (search pages and pages of records by id).
    pub pages: u64,
    pub records: u64,
    /// COQL counts.
    pub counts: u64,
    /// Slices read again in smaller parts because they held more than a page.
    pub slices_split: u64,
    /// COQL requests listing ids (dense slices, the completeness check).
    pub listings: u64,
    /// `GET /Deals?ids=` requests.
    pub by_id: u64,
    /// Zoho's count of exact "Closed Won" deals in the whole window, taken before the first search.
    pub root_count: Option<u64>,
}

/// The outcome of a fetch: its statistics, and whether it stopped before the end (the receiver went away, or a
/// shutdown was asked for).
pub struct Fetched {
    pub stats: FetchStats,
    pub stopped_early: bool,
}

/// One unit of fetching work.
#[derive(Debug)]
enum Task {
    /// The next page of a slice of the window, which is estimated to hold this many closed-won deals.
    Slice(Window, u64),
    /// A slice too dense to cut: listed by id, then read by id.
    Dense(Window),
    /// Up to 100 deals by id.
    ById(Vec<String>),
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
    counters: Mutex<FetchStats>,
    /// Closed-won deals in the whole window, once counted (for the progress bar).
    expected: std::sync::Arc<AtomicU64>,
    /// The fields to ask for by id: those search returned (its first record's keys), so that a deal read by id
    /// has the shape of one found by search. Empty until a search page shows them.
    fields: Mutex<Vec<String>>,
    /// Fields a record read by id must carry whatever search returned: every field the run's columns read.
    required_fields: Vec<String>,
    /// Search answered a slice in another order than asked: slices are then cut small before they are read.
    unordered: std::sync::atomic::AtomicBool,
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
        Fetcher {
            client,
            tx,
            stage: Box::new(stage),
            shutdown,
            concurrency,
            counters: Mutex::default(),
            expected: Default::default(),
            fields: Mutex::new(Vec::new()),
            required_fields: Vec::new(),
            unordered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The Zoho fields the run's columns read: asked for by id even if search's records did not carry them.
    pub fn reading(mut self, fields: Vec<String>) -> Self {
        self.required_fields = fields;
        self
    }

    /// The fields to read records by id with, as another fetcher learned them from search.
    pub fn with_fields(self, fields: Vec<String>) -> Self {
        *self.fields.lock().expect("not poisoned") = fields;
        self
    }

    /// The fields search returned, once a search page showed them.
    pub fn fields(&self) -> Vec<String> {
        self.fields.lock().expect("not poisoned").clone()
    }

    /// Shares the expected number of deals with a progress display.
    pub fn expected(mut self, expected: std::sync::Arc<AtomicU64>) -> Self {
        self.expected = expected;
        self
    }

    /// Sends every closed-won candidate of `root` down the channel, page by page. The window is counted before
    /// the first search, so that every deal a search then returns was in the window when it was counted.
    pub async fn fetch_window(&self, root: Window) -> Result<Fetched, ZohoError> {
        let Some(n) = self.count_of(&root).await? else { return Ok(self.fetched(true)) };
        self.expected.store(n, Ordering::Relaxed);
        self.count(|c| {
            c.root_count.get_or_insert(n);
        });
        // A window Zoho counts empty is still searched once: that checks the search API (its scope) every night.
        // A Closing_Date window cannot be read in order (search does not sort on a date field): a page's worth each.
        let small = n.div_ceil(SLICE_TARGET) as usize;
        let wanted =
            if root.field.is_date() { small.max(1) } else { small.clamp(1, self.concurrency * SLICES_PER_REQUEST) };
        self.run(slices(root, n, wanted)).await
    }

    /// Sends the deals with these ids down the channel, read by id (what the completeness check found missing).
    pub async fn fetch_ids(&self, ids: Vec<String>) -> Result<Fetched, ZohoError> {
        let tasks = ids.chunks(IDS_PER_REQUEST).map(|c| Task::ById(c.to_vec())).collect();
        self.run(tasks).await
    }

    /// What this fetcher did so far.
    pub fn stats(&self) -> FetchStats {
        self.fetched(false).stats
    }

    fn fetched(&self, stopped_early: bool) -> Fetched {
        Fetched { stats: self.counters.lock().expect("not poisoned").clone(), stopped_early }
    }

    fn count(&self, add: impl FnOnce(&mut FetchStats)) {
        add(&mut self.counters.lock().expect("not poisoned"));
    }

    async fn run(&self, start: Vec<Task>) -> Result<Fetched, ZohoError> {
        let mut queue = VecDeque::from(start);
        let mut running = FuturesUnordered::new();
        let mut stopped = false;
        loop {
            while running.len() < self.concurrency {
                let Some(task) = queue.pop_front() else { break };
                running.push(self.task(task));
            }
            match running.next().await {
                None => break,
                Some(Err(e)) => return Err(e),
                // A task's follow-ups go first: slices already begun are read on before new ones start, so
                // that rows arrive near the order of the window (a sink's indexes then touch few pages at once).
                Some(Ok(Step::More(tasks))) => {
                    for task in tasks.into_iter().rev() {
                        queue.push_front(task);
                    }
                }
                Some(Ok(Step::Stop)) => {
                    stopped = true;
                    break;
                }
            }
        }
        Ok(self.fetched(stopped))
    }

    async fn task(&self, task: Task) -> Result<Step, ZohoError> {
        match task {
            Task::Slice(w, estimate)
                if estimate > SLICE_TARGET
                    && (w.field.is_date() || self.unordered.load(Ordering::Relaxed))
                    && w.split().is_some() =>
            {
                // A slice that cannot be read in order is read in parts of a page's worth.
                self.count(|c| c.slices_split += 1);
                Ok(Step::More(slices(w, estimate, estimate.div_ceil(SLICE_TARGET) as usize)))
            }
            Task::Slice(w, estimate) => self.slice(w, estimate).await,
            Task::Dense(w) => self.dense(w).await,
            Task::ById(ids) => self.by_id(ids).await,
        }
    }

    /// Runs a request unless a shutdown comes first; `None` means stop.
    async fn guarded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ZohoError>>,
    ) -> Result<Option<T>, ZohoError> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait() => Ok(None),
            r = fut => r.map(Some),
        }
    }

    async fn count_of(&self, w: &Window) -> Result<Option<u64>, ZohoError> {
        self.count(|c| c.counts += 1);
        self.guarded(self.client.coql_count(&coql_count_closed_won(w))).await
    }

    /// Reads a slice's next page: the whole slice when Zoho says there is no more; otherwise what the page
    /// proves, and the rest of the slice as another task.
    async fn slice(&self, w: Window, estimate: u64) -> Result<Step, ZohoError> {
        let criteria = closed_won_in(&w).to_string();
        let order = if w.field.is_date() { SearchOrder::Default } else { SearchOrder::ModifiedAsc };
        let Some(page) = self.guarded(self.client.search_page("Deals", &criteria, order, 1, PER_PAGE)).await? else {
            return Ok(Step::Stop);
        };
        let Some(page) = page else { return Ok(Step::More(vec![])) };
        self.learn_fields(&page);
        if !page.more_records {
            return self.emit(page, Origin::Search { window: w.to_string() }, None).await;
        }
        if order == SearchOrder::ModifiedAsc {
            if let Some((last, keep)) = ascending_last_time(&page, &w) {
                if last > w.start {
                    // Every deal before the last second is on this page, in whatever order ties came.
                    let rest = Window { field: w.field, start: last, end: w.end };
                    let left = estimate.saturating_sub(page.len() as u64).max(1);
                    if let Step::Stop = self.emit(page, Origin::Search { window: w.to_string() }, Some(keep)).await? {
                        return Ok(Step::Stop);
                    }
                    return Ok(Step::More(vec![Task::Slice(rest, left)]));
                }
                // A whole page in the slice's first second: that second is dense.
                return Ok(Step::More(self.dense_then_rest(&w, estimate)));
            }
            if !self.unordered.swap(true, Ordering::Relaxed) {
                tracing::warn!(event = "search_unordered", window = %w,
                    "search did not answer in the Modified_Time order asked for; reading the rest in slices of a page's worth");
            }
        }
        // Not in modification order: the page says nothing about what it left out. Read the slice in parts.
        self.count(|c| c.slices_split += 1);
        let parts = estimate.div_ceil(SLICE_TARGET).max(2) as usize;
        match w.split() {
            Some(_) => Ok(Step::More(slices(w, estimate.max(PER_PAGE as u64), parts))),
            None => Ok(Step::More(vec![Task::Dense(w)])),
        }
    }

    /// A slice whose first second alone fills a page: that second by id, the rest as a slice.
    fn dense_then_rest(&self, w: &Window, estimate: u64) -> Vec<Task> {
        let second =
            Window { field: w.field, start: w.start, end: (w.start + chrono::TimeDelta::seconds(1)).min(w.end) };
        let mut tasks = Vec::new();
        if second.end < w.end {
            tasks.push(Task::Slice(Window { field: w.field, start: second.end, end: w.end }, estimate));
        }
        tasks.push(Task::Dense(second));
        tasks
    }

    /// Lists a dense slice's closed-won deals by id (COQL keyset paging), then reads them by id.
    async fn dense(&self, w: Window) -> Result<Step, ZohoError> {
        tracing::info!(event = "dense_slice", window = %w, "more closed-won deals than a search page in a slice that cannot be cut; reading them by id");
        let Some(ids) = self.guarded(self.list_ids(&w)).await? else { return Ok(Step::Stop) };
        Ok(Step::More(ids.chunks(IDS_PER_REQUEST).map(|c| Task::ById(c.to_vec())).collect()))
    }

    /// Every closed-won deal id in `w`, from COQL, `id > last` at a time (one request per 2,000).
    pub async fn list_ids(&self, w: &Window) -> Result<Vec<String>, ZohoError> {
        let mut ids = Vec::new();
        let query = |after: Option<&str>| {
            self.count(|c| c.listings += 1);
            coql_keyset_page("id", "=", w, after)
        };
        self.client.coql_keyset(query, |r| ids.extend(record_id(r))).await?;
        Ok(ids)
    }

    /// Reads up to 100 deals by id, with the fields search returns (50 a request; more are merged by id).
    async fn by_id(&self, ids: Vec<String>) -> Result<Step, ZohoError> {
        let Some(fields) = self.by_id_fields().await? else { return Ok(Step::Stop) };
        let mut parts = Vec::new();
        for chunk in fields.chunks(FIELDS_PER_REQUEST) {
            self.count(|c| c.by_id += 1);
            match self.guarded(self.client.records_by_id("Deals", &ids, chunk)).await? {
                None => return Ok(Step::Stop),
                Some(None) => {}
                Some(Some(page)) => parts.push(page),
            }
        }
        let page = match parts.len() {
            0 => return Ok(Step::More(vec![])),
            1 => parts.pop().expect("one part"),
            _ => merge_by_id(&parts).map_err(|reason| ZohoError::InvalidBody {
                what: format!("GET /crm/v8/Deals?ids=… ({} ids)", ids.len()),
                status: 200,
                reason,
            })?,
        };
        self.emit(page, Origin::ById { ids: ids.len() }, None).await
    }

    /// The fields to ask for by id: search's, once a search page showed them; otherwise Zoho's field list.
    async fn by_id_fields(&self) -> Result<Option<Vec<String>>, ZohoError> {
        let known = self.fields.lock().expect("not poisoned").clone();
        let mut fields = if known.is_empty() {
            let Some(meta) = self.guarded(self.client.fields("Deals")).await? else { return Ok(None) };
            meta.into_iter().map(|f| f.api_name).collect()
        } else {
            known
        };
        for f in &self.required_fields {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
        // `id` comes back anyway; asking for it would take one of the 50.
        fields.retain(|f| f != "id");
        Ok(Some(fields))
    }

    /// Notes the fields search returns (its first record's keys, Zoho's `$` system keys aside).
    fn learn_fields(&self, page: &Page) {
        let mut fields = self.fields.lock().expect("not poisoned");
        if !fields.is_empty() {
            return;
        }
        if let Some(Ok(Members(members))) = page.get(0).map(Members::of) {
            *fields = members.into_iter().map(|(k, _)| k.into_owned()).filter(|k| !k.starts_with('$')).collect();
        }
    }

    async fn emit(&self, page: Page, origin: Origin, keep: Option<usize>) -> Result<Step, ZohoError> {
        self.count(|c| {
            c.pages += 1;
            c.records += page.len() as u64;
        });
        tracing::debug!(event = "page", records = page.len(), origin = ?origin);
        match self.tx.send((self.stage)(FetchedPage { page, origin, keep })).await {
            Ok(()) => Ok(Step::More(vec![])),
            // The receiving side stopped (it failed, or a shutdown was asked for).
            Err(_) => Ok(Step::Stop),
        }
    }
}

/// `w` cut into `parts` slices of equal length, sharing the `estimate` of closed-won deals it holds.
fn slices(w: Window, estimate: u64, parts: usize) -> Vec<Task> {
    match w.split_into(parts) {
        Some(pieces) => {
            let each = estimate.div_ceil(pieces.len() as u64);
            pieces.into_iter().map(|p| Task::Slice(p, each)).collect()
        }
        None => vec![Task::Slice(w, estimate)],
    }
}

/// One page from parts of the same records read with different fields: each record's members, the first part's
/// first, then what the other parts add (by id).
fn merge_by_id(parts: &[Page]) -> Result<Page, String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for r in parts.iter().flat_map(Page::records) {
        let Some(id) = record_id(r) else { continue };
        match merged.iter_mut().find(|(m, _)| *m == id) {
            None => merged.push((id, r.get().to_string())),
            Some((_, have)) => {
                let extra: String = match (serde_json::from_str::<Members>(have), Members::of(r)) {
                    (Ok(Members(had)), Ok(Members(more))) => more
                        .iter()
                        .filter(|(name, _)| !had.iter().any(|(h, _)| h == name))
                        .map(|(name, value)| {
                            format!(",{}:{}", serde_json::to_string(name).expect("strings serialize"), value.get())
                        })
                        .collect(),
                    _ => continue,
                };
                if !extra.is_empty() {
                    have.truncate(have.trim_end().len() - 1);
                    have.push_str(&extra);
                    have.push('}');
                }
            }
        }
    }
    Page::of_records(merged.iter().map(|(_, t)| t.as_str()), false)
}

/// The modification time of a page's last record and how many records come before that second, provided
/// every record is within `w` in ascending `Modified_Time` order (ties in any order).
fn ascending_last_time(page: &Page, w: &Window) -> Option<(DateTime<FixedOffset>, usize)> {
    let (mut prev, mut before) = (w.start, 0);
    for (i, r) in page.records().enumerate() {
        let t = modified_time(r)?;
        if t < prev || t >= w.end {
            return None;
        }
        if t > prev {
            before = i;
        }
        prev = t;
    }
    (!page.is_empty()).then_some((prev, before))
}

/// A record's `Modified_Time`, when it has a readable one.
fn modified_time(r: Record<'_>) -> Option<DateTime<FixedOffset>> {
    #[derive(serde::Deserialize)]
    struct Modified<'a> {
        #[serde(rename = "Modified_Time", borrow)]
        modified: Option<std::borrow::Cow<'a, str>>,
    }
    DateTime::parse_from_rfc3339(&serde_json::from_str::<Modified>(r.get()).ok()?.modified?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowField;

    fn w(from: &str, to: &str) -> Window {
        Window::new(WindowField::ModifiedTime, from.parse().unwrap(), to.parse().unwrap()).unwrap()
    }

    fn page(times: &[&str]) -> Page {
        let records: Vec<String> = times
            .iter()
            .enumerate()
            .map(|(i, t)| format!(r#"{{"id":"{i}","Modified_Time":"{t}","Stage":"Closed Won"}}"#))
            .collect();
        Page::of_records(&records, true).unwrap()
    }

    #[test]
    fn a_page_in_ascending_modification_order_gives_its_last_time_whatever_the_order_of_ties() {
        let win = w("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z");
        let last = ascending_last_time(
            &page(&["2026-10-01T06:00:00+05:30", "2026-10-01T06:00:00+05:30", "2026-10-01T06:39:00+05:30"]),
            &win,
        );
        assert_eq!(last, Some((DateTime::parse_from_rfc3339("2026-10-01T06:39:00+05:30").unwrap(), 2)));
        let ties = ascending_last_time(
            &page(&["2026-10-01T06:00:00+05:30", "2026-10-01T00:39:00Z", "2026-10-01T06:09:00+05:30"]),
            &win,
        );
        assert_eq!(ties, Some((DateTime::parse_from_rfc3339("2026-10-01T00:39:00Z").unwrap(), 1)), "one record before");
    }

    #[test]
    fn a_page_out_of_order_or_outside_the_window_gives_nothing() {
        let win = w("2026-10-01T00:00:00Z", "2026-10-02T00:00:00Z");
        assert_eq!(
            ascending_last_time(&page(&["2026-10-01T10:01:00Z", "2026-10-01T10:00:00Z"]), &win),
            None,
            "newest first"
        );
        assert_eq!(
            ascending_last_time(&page(&["2026-09-30T23:59:59Z", "2026-10-01T10:00:00Z"]), &win),
            None,
            "before the window"
        );
        assert_eq!(
            ascending_last_time(&page(&["2026-10-01T10:00:00Z", "2026-10-02T00:00:00Z"]), &win),
            None,
            "at the (exclusive) end"
        );
        assert_eq!(ascending_last_time(&page(&["2026-10-01T10:00:00Z", "yesterday"]), &win), None, "unreadable");
    }

    #[test]
    fn records_read_with_different_fields_are_merged_by_id() {
        let a = Page::of_records([r#"{"id":"1","A":1,"$x":true}"#, r#"{"id":"2","A":2}"#], false).unwrap();
        let b = Page::of_records([r#"{"id":"2","B":"two","$x":false}"#, r#"{"id":"1","B":"one"}"#], false).unwrap();
        let m = merge_by_id(&[a, b]).unwrap();
        let texts: Vec<&str> = m.records().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"id":"1","A":1,"$x":true,"B":"one"}"#, r#"{"id":"2","A":2,"B":"two","$x":false}"#]);
    }
}
