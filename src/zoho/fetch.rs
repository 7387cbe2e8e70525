//! Fetches every closed-won deal of a window, concurrently, without holding the whole result. Zoho's search order
//! is undocumented (ties, or an edit while a run pages, make page 2 skip what page 1 did not show), so no criteria
//! is read past its first page: the window is counted (COQL) and cut into slices, each page starting from the last
//! second the previous one proved complete; dense slices are read by id, and what search misses by `fetch_ids`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::criteria::{closed_won_in, coql_count_closed_won};
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

#[derive(Debug, Clone)]
pub enum Origin {
    Search { window: String },
    ById { ids: usize },
}

#[derive(Debug)]
pub struct FetchedPage {
    pub page: Page,
    /// Only the first `keep` records belong to the slice: the answer was in modification order, and the records
    /// of its last second are read again with the rest of the slice.
    pub keep: Option<usize>,
}

#[derive(Debug, Default, Clone)]
pub struct FetchStats {
    /// Pages of records handed on (search pages and pages of records by id).
    pub pages: u64,
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

impl FetchStats {
    pub fn add(&mut self, s: FetchStats) {
        self.pages += s.pages;
        self.counts += s.counts;
        self.slices_split += s.slices_split;
        self.listings += s.listings;
        self.by_id += s.by_id;
        self.root_count = self.root_count.or(s.root_count);
    }
}

#[derive(Debug)]
enum Task {
    /// The whole window: counted, then cut into slices.
    Count(Window),
    /// The next page of a slice of the window, which is estimated to hold this many closed-won deals.
    Slice(Window, u64),
    /// A slice too dense to cut: listed by id, then read by id.
    Dense(Window),
    ById(Vec<String>),
}

/// What a task leaves to do; `Err(None)` when a shutdown or a closed channel stopped it.
type Step = Result<Vec<Task>, Option<ZohoError>>;

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
    expected: Arc<AtomicU64>,
    /// The fields to ask for by id: those search returned (its first record's keys), so that a deal read by id
    /// has the shape of one found by search. Empty until a search page shows them.
    fields: Mutex<Vec<String>>,
    /// Fields a record read by id must carry whatever search returned: every field the run's columns read.
    required_fields: Vec<String>,
    /// Search answered a slice in another order than asked: slices are then cut small before they are read.
    unordered: AtomicBool,
}

impl<'a, P> Fetcher<'a, P> {
    pub fn new(
        client: &'a ZohoClient,
        tx: mpsc::Sender<P>,
        stage: impl Fn(FetchedPage) -> P + Send + Sync + 'a,
        shutdown: Shutdown,
    ) -> Self {
        Fetcher {
            client,
            tx,
            stage: Box::new(stage),
            shutdown,
            concurrency: client.settings().max_concurrency.max(1),
            counters: Mutex::default(),
            expected: Default::default(),
            fields: Mutex::default(),
            required_fields: Vec::new(),
            unordered: AtomicBool::new(false),
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

    pub fn fields(&self) -> Vec<String> {
        self.fields.lock().expect("not poisoned").clone()
    }

    pub fn expected(mut self, expected: Arc<AtomicU64>) -> Self {
        self.expected = expected;
        self
    }

    /// Sends every closed-won candidate of `root` down the channel, page by page; `true` when it stopped early
    /// (the receiver went away, or a shutdown). The window is counted before the first search, so that every deal
    /// a search then returns was in the window when it was counted.
    pub async fn fetch_window(&self, root: Window) -> Result<bool, ZohoError> {
        self.run(vec![Task::Count(root)]).await
    }

    /// Sends the deals with these ids down the channel, read by id (what the completeness check found missing).
    pub async fn fetch_ids(&self, ids: Vec<String>) -> Result<bool, ZohoError> {
        self.run(by_id(&ids)).await
    }

    pub fn stats(&self) -> FetchStats {
        self.counters.lock().expect("not poisoned").clone()
    }

    fn count(&self, add: impl FnOnce(&mut FetchStats)) {
        add(&mut self.counters.lock().expect("not poisoned"));
    }

    async fn run(&self, start: Vec<Task>) -> Result<bool, ZohoError> {
        let mut queue = VecDeque::from(start);
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < self.concurrency {
                let Some(task) = queue.pop_front() else { break };
                running.push(self.task(task));
            }
            match running.next().await {
                None => return Ok(false),
                // A task's follow-ups go first: slices already begun are read on before new ones start, so
                // that rows arrive near the order of the window (a sink's indexes then touch few pages at once).
                Some(Ok(tasks)) => tasks.into_iter().rev().for_each(|task| queue.push_front(task)),
                Some(Err(None)) => return Ok(true),
                Some(Err(Some(e))) => return Err(e),
            }
        }
    }

    async fn task(&self, task: Task) -> Step {
        match task {
            Task::Count(root) => self.count_window(root).await,
            Task::Slice(w, estimate) => self.slice(w, estimate).await,
            Task::Dense(w) => {
                tracing::info!(event = "dense_slice", window = %w, "more closed-won deals than a search page in a slice that cannot be cut; reading them by id");
                let listed = self.client.closed_won_ids(&w, || self.count(|c| c.listings += 1));
                Ok(by_id(&self.guarded(listed).await?))
            }
            Task::ById(ids) => self.by_id(ids).await,
        }
    }

    /// Runs a request unless a shutdown comes first.
    async fn guarded<T>(&self, fut: impl Future<Output = Result<T, ZohoError>>) -> Result<T, Option<ZohoError>> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait() => Err(None),
            r = fut => Ok(r?),
        }
    }

    async fn count_window(&self, root: Window) -> Step {
        self.count(|c| c.counts += 1);
        let n = self.guarded(self.client.coql_count(&coql_count_closed_won(&root))).await?;
        self.expected.store(n, Ordering::Relaxed);
        self.count(|c| c.root_count = c.root_count.or(Some(n)));
        // A window Zoho counts empty is still searched once: that checks the search API (its scope) every night.
        // A Closing_Date window cannot be read in order (search does not sort on a date field): a page's worth each.
        let most = if root.field.is_date() { usize::MAX } else { self.concurrency * SLICES_PER_REQUEST };
        Ok(slices(root, n, (n.div_ceil(SLICE_TARGET) as usize).clamp(1, most)))
    }

    /// Reads a slice's next page (a large slice that cannot be read in order is cut first): the whole slice when
    /// Zoho says there is no more; otherwise what the page proves, and the rest of the slice as another task.
    async fn slice(&self, w: Window, estimate: u64) -> Step {
        let in_order = !w.field.is_date() && !self.unordered.load(Ordering::Relaxed);
        if estimate > SLICE_TARGET && !in_order && w.split_into(2).is_some() {
            // A slice that cannot be read in order is read in parts of a page's worth.
            self.count(|c| c.slices_split += 1);
            return Ok(slices(w, estimate, estimate.div_ceil(SLICE_TARGET) as usize));
        }
        let criteria = closed_won_in(&w).to_string();
        let order = if w.field.is_date() { SearchOrder::Default } else { SearchOrder::ModifiedAsc };
        let Some(page) = self.guarded(self.client.search_page(&criteria, order, PER_PAGE)).await? else {
            return Ok(vec![]);
        };
        self.learn_fields(&page);
        let origin = Origin::Search { window: w.to_string() };
        if !page.more_records {
            return self.emit(page, origin, None).await;
        }
        if order == SearchOrder::ModifiedAsc {
            match ascending_last_time(&page, &w) {
                // Every deal before the last second is on this page, in whatever order ties came.
                Some((last, keep)) if last > w.start => {
                    let left = estimate.saturating_sub(page.len() as u64).max(1);
                    self.emit(page, origin, Some(keep)).await?;
                    return Ok(vec![Task::Slice(Window { start: last, ..w }, left)]);
                }
                // A whole page in the slice's first second: that second is dense.
                Some(_) => return Ok(dense_then_rest(&w, estimate)),
                None if !self.unordered.swap(true, Ordering::Relaxed) => {
                    tracing::warn!(event = "search_unordered", window = %w,
                        "search did not answer in the Modified_Time order asked for; reading the rest in slices of a page's worth");
                }
                None => {}
            }
        }
        // Not in modification order: the page says nothing about what it left out. Read the slice in parts.
        self.count(|c| c.slices_split += 1);
        let parts = estimate.div_ceil(SLICE_TARGET).max(2) as usize;
        match w.split_into(2) {
            Some(_) => Ok(slices(w, estimate.max(PER_PAGE as u64), parts)),
            None => Ok(vec![Task::Dense(w)]),
        }
    }

    /// Reads up to 100 deals by id, with the fields search returns (50 a request; more are merged by id).
    async fn by_id(&self, ids: Vec<String>) -> Step {
        let (mut parts, fields) = (Vec::new(), self.by_id_fields().await?);
        let chunks = fields.chunks(FIELDS_PER_REQUEST);
        let asked = chunks.len();
        for chunk in chunks {
            self.count(|c| c.by_id += 1);
            parts.extend(self.guarded(self.client.records_by_id(&ids, chunk)).await?);
        }
        let what = format!("GET /crm/v8/Deals?ids=… ({} ids)", ids.len());
        match merge_by_id(parts, asked).map_err(|reason| ZohoError::invalid(what, 200, reason))? {
            Some(page) => self.emit(page, Origin::ById { ids: ids.len() }, None).await,
            None => Ok(vec![]),
        }
    }

    /// The fields to ask for by id: search's, once a search page showed them; otherwise Zoho's field list.
    async fn by_id_fields(&self) -> Result<Vec<String>, Option<ZohoError>> {
        let mut fields = self.fields();
        if fields.is_empty() {
            fields = self.guarded(self.client.fields("Deals")).await?.into_iter().map(|f| f.api_name).collect();
        }
        let missing: Vec<String> = self.required_fields.iter().filter(|f| !fields.contains(f)).cloned().collect();
        fields.extend(missing);
        // `id` comes back anyway; asking for it would take one of the 50.
        fields.retain(|f| f != "id");
        Ok(fields)
    }

    /// Notes the fields search returns (its first record's keys, Zoho's `$` system keys aside).
    fn learn_fields(&self, page: &Page) {
        let mut fields = self.fields.lock().expect("not poisoned");
        let first = page.get(0).filter(|_| fields.is_empty());
        if let Some(Ok(Members(members))) = first.map(|r| serde_json::from_str(r.get())) {
            *fields = members.into_iter().map(|(k, _)| k.into_owned()).filter(|k| !k.starts_with('$')).collect();
        }
    }

    async fn emit(&self, page: Page, origin: Origin, keep: Option<usize>) -> Step {
        self.count(|c| c.pages += 1);
        tracing::debug!(event = "page", records = page.len(), origin = ?origin);
        // A closed channel: the receiving side stopped (it failed, or a shutdown was asked for).
        self.tx.send((self.stage)(FetchedPage { page, keep })).await.map_err(|_| None)?;
        Ok(vec![])
    }
}

fn by_id(ids: &[String]) -> Vec<Task> {
    ids.chunks(IDS_PER_REQUEST).map(|c| Task::ById(c.to_vec())).collect()
}

/// `w` cut into `parts` slices of equal length, sharing the `estimate` of closed-won deals it holds.
fn slices(w: Window, estimate: u64, parts: usize) -> Vec<Task> {
    let pieces = w.split_into(parts).unwrap_or_else(|| vec![w]);
    let each = estimate.div_ceil(pieces.len() as u64);
    pieces.into_iter().map(|p| Task::Slice(p, each)).collect()
}

/// A slice whose first second alone fills a page: that second by id, the rest as a slice.
fn dense_then_rest(w: &Window, estimate: u64) -> Vec<Task> {
    let second = Window { end: (w.start + chrono::TimeDelta::seconds(1)).min(w.end), ..w.clone() };
    let rest = (second.end < w.end).then(|| Task::Slice(Window { start: second.end, ..w.clone() }, estimate));
    rest.into_iter().chain([Task::Dense(second)]).collect()
}

/// One page from the `asked` parts of the same records read with different fields: each record's members (the first
/// part's members first); `None` without parts. A deal missing from a part (deleted or edited between the
/// requests) is left out, not mapped with empty columns: the completeness proof reads it again if Zoho still lists
/// it. A record that cannot be merged (no readable id, not an object) goes on as it came, for the mapper to
/// quarantine with its reason.
fn merge_by_id(parts: Vec<Page>, asked: usize) -> Result<Option<Page>, String> {
    if asked < 2 {
        return Ok(parts.into_iter().next());
    }
    struct Merged {
        id: Option<String>,
        text: String,
        /// How many parts in a row, from the first, had it.
        parts_in: usize,
        unreadable: bool,
    }
    let mut merged: Vec<Merged> = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        for r in part.records() {
            let (id, members) = (record_id(r), serde_json::from_str::<Members>(r.get()));
            let at = id.as_ref().and_then(|id| merged.iter().position(|m| m.id.as_ref() == Some(id)));
            let (m, more) = match (at, members) {
                (None, members) => {
                    let (text, parts_in) = (r.get().to_string(), usize::from(p == 0));
                    merged.push(Merged { unreadable: id.is_none() || members.is_err(), id, text, parts_in });
                    continue;
                }
                // This part of a deal seen before is the unreadable one: the deal goes on as this part.
                (Some(i), Err(_)) => {
                    (merged[i].text, merged[i].unreadable) = (r.get().to_string(), true);
                    continue;
                }
                (Some(i), Ok(Members(more))) => (&mut merged[i], more),
            };
            if m.parts_in == p {
                m.parts_in += 1;
            }
            if m.unreadable {
                continue;
            }
            let Members(had) = serde_json::from_str(&m.text).expect("a merged record is an object");
            let new = more.iter().filter(|(name, _)| !had.iter().any(|(h, _)| h == name));
            let extra: String =
                new.map(|(name, value)| format!(",{}:{}", serde_json::json!(name), value.get())).collect();
            m.text.insert_str(m.text.len() - 1, &extra);
        }
    }
    let whole = merged.iter().filter(|m| m.unreadable || m.parts_in == asked).map(|m| &m.text);
    Page::of_records(whole, false).map(Some)
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
        let m = merge_by_id(vec![a, b], 2).unwrap().unwrap();
        let texts: Vec<&str> = m.records().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"id":"1","A":1,"$x":true,"B":"one"}"#, r#"{"id":"2","A":2,"B":"two","$x":false}"#]);
    }

    #[test]
    fn a_part_that_cannot_be_merged_goes_on_as_it_came_for_the_mapper_to_quarantine() {
        let parts = |second: &str| {
            let a = Page::of_records([r#"{"id":"1","A":1}"#, r#"{"id":"2","A":2}"#], false).unwrap();
            vec![a, Page::of_records([r#"{"id":"1","B":1}"#, second], false).unwrap()]
        };
        for unreadable in [r#"{"id":null,"B":2}"#, r#"["2"]"#] {
            let m = merge_by_id(parts(unreadable), 2).unwrap().unwrap();
            let texts: Vec<&str> = m.records().map(|r| r.get()).collect();
            assert_eq!(texts, [r#"{"id":"1","A":1,"B":1}"#, unreadable], "deal 2 lacks part 2: left out");
        }
        assert!(merge_by_id(vec![], 1).unwrap().is_none());
    }

    #[test]
    fn a_deal_missing_from_one_part_is_left_out_rather_than_written_with_empty_columns() {
        let a = Page::of_records([r#"{"id":"1","A":1}"#, r#"{"id":"2","A":2}"#, r#"{"id":"3","A":3}"#], false);
        let b = Page::of_records([r#"{"id":"1","B":1}"#, r#"{"id":"3","B":3}"#, r#"{"id":"3","B":3}"#], false);
        let c = Page::of_records([r#"{"id":"3","C":3}"#, r#"{"id":"2","C":2}"#, r#"{"id":"4","C":4}"#], false);
        let m = merge_by_id(vec![a.unwrap(), b.unwrap(), c.unwrap()], 3).unwrap().unwrap();
        let texts: Vec<&str> = m.records().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"id":"3","A":3,"B":3,"C":3}"#], "1 lacks C, 2 lacks B, 4 lacks A and B");
        let gone = merge_by_id(vec![Page::of_records([r#"{"id":"1","A":1}"#], false).unwrap()], 2).unwrap();
        assert_eq!(gone.unwrap().records().count(), 0, "a part that came back empty leaves every deal out");
    }
}
