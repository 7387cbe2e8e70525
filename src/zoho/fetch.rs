//! Pages through every closed-won deal of a window without ever holding the whole result: the search API
//! gives at most 2000 records per criteria, so a window that holds more is halved until each part fits, and a
//! part that cannot be halved any further (one second, or one day) is read through COQL with keyset paging.
//!
//! To know whether a window fits before emitting anything, a window whose first page says "more records"
//! is probed at its last allowed page: if that page still has more, the window is split without having sent a
//! single record downstream, so no record is emitted twice by the splitting itself.

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::criteria::{closed_won_in, coql_closed_won_after};
use super::{Page, ZohoClient, ZohoError};
use crate::shutdown::Shutdown;
use crate::window::Window;

/// Records per search page (Zoho's maximum).
pub const PER_PAGE: u32 = 200;
/// Records the search API returns for one criteria at most.
pub const SEARCH_CAP: u32 = 2000;

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
    pub windows_searched: u64,
    pub windows_split: u64,
    pub coql_pages: u64,
}

/// The outcome of `fetch_window`: its statistics, and whether it stopped before the end (the receiver went
/// away, or a shutdown was asked for).
pub struct Fetched {
    pub stats: FetchStats,
    pub stopped_early: bool,
}

pub struct Fetcher<'a> {
    client: &'a ZohoClient,
    tx: mpsc::Sender<FetchedPage>,
    shutdown: Shutdown,
    stats: FetchStats,
}

impl<'a> Fetcher<'a> {
    pub fn new(client: &'a ZohoClient, tx: mpsc::Sender<FetchedPage>, shutdown: Shutdown) -> Self {
        Fetcher { client, tx, shutdown, stats: FetchStats::default() }
    }

    /// Runs a request unless a shutdown comes first; `None` means stop.
    async fn guarded<T>(&self, fut: impl std::future::Future<Output = Result<T, ZohoError>>) -> Result<Option<T>, ZohoError> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait() => Ok(None),
            r = fut => r.map(Some),
        }
    }

    async fn search(&self, criteria: &str, page: u32) -> Result<Option<Option<Page>>, ZohoError> {
        self.guarded(self.client.search_page("Deals", criteria, page, PER_PAGE)).await
    }

    /// Sends every closed-won candidate of `root` down the channel, page by page.
    pub async fn fetch_window(mut self, root: Window) -> Result<Fetched, ZohoError> {
        let mut stack = vec![root];
        while let Some(window) = stack.pop() {
            self.stats.windows_searched += 1;
            match self.search_window(&window).await {
                Ok(WindowResult::Done) => {}
                Ok(WindowResult::Closed) => return Ok(Fetched { stats: self.stats, stopped_early: true }),
                Ok(WindowResult::TooBig) | Err(ZohoError::LimitReached { .. }) => match window.split() {
                    Some((a, b)) => {
                        self.stats.windows_split += 1;
                        tracing::debug!(event = "window_split", window = %window, "more than 2000 matches; halving");
                        stack.push(b);
                        stack.push(a);
                    }
                    None => {
                        tracing::info!(event = "coql_fallback", window = %window,
                            "more than 2000 matches in a window that cannot be halved; reading it through COQL");
                        if !self.coql_window(&window).await? {
                            return Ok(Fetched { stats: self.stats, stopped_early: true });
                        }
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Ok(Fetched { stats: self.stats, stopped_early: false })
    }

    async fn search_window(&mut self, window: &Window) -> Result<WindowResult, ZohoError> {
        let criteria = closed_won_in(window).to_string();
        let origin = |page| Origin::Search { window: window.to_string(), page };
        let Some(first) = self.search(&criteria, 1).await? else { return Ok(WindowResult::Closed) };
        let Some(first) = first else { return Ok(WindowResult::Done) };
        if !first.more_records {
            return Ok(self.emit(first, origin(1)).await);
        }
        let last_page = SEARCH_CAP / PER_PAGE;
        let Some(probe) = self.search(&criteria, last_page).await? else { return Ok(WindowResult::Closed) };
        if probe.as_ref().is_some_and(|p| p.more_records) {
            return Ok(WindowResult::TooBig);
        }
        if let WindowResult::Closed = self.emit(first, origin(1)).await {
            return Ok(WindowResult::Closed);
        }
        for n in 2..last_page {
            let Some(page) = self.search(&criteria, n).await? else { return Ok(WindowResult::Closed) };
            let Some(page) = page else { return Ok(WindowResult::Done) };
            let more = page.more_records;
            if let WindowResult::Closed = self.emit(page, origin(n)).await {
                return Ok(WindowResult::Closed);
            }
            if !more {
                return Ok(WindowResult::Done);
            }
        }
        // Pages 2..last_page all said "more": the probed last page completes the window.
        match probe {
            Some(p) => Ok(self.emit(p, origin(last_page)).await),
            None => Ok(WindowResult::Done),
        }
    }

    /// Reads a window through COQL, `id > last` at a time. Returns false when it had to stop early.
    async fn coql_window(&mut self, window: &Window) -> Result<bool, ZohoError> {
        let mut after: Option<String> = None;
        loop {
            let query = coql_closed_won_after(window, after.as_deref(), PER_PAGE);
            let Some(page) = self.guarded(self.client.coql(&query)).await? else { return Ok(false) };
            let Some(page) = page else { return Ok(true) };
            self.stats.coql_pages += 1;
            let more = page.more_records && page.records.len() as u32 >= PER_PAGE;
            let last_id = page.records.last().and_then(|r| record_id(r));
            let origin = Origin::Coql { window: window.to_string(), after_id: after.clone() };
            if let WindowResult::Closed = self.emit(page, origin).await {
                return Ok(false);
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
                (false, _) => return Ok(true),
            }
        }
    }

    async fn emit(&mut self, page: Page, origin: Origin) -> WindowResult {
        self.stats.pages += 1;
        self.stats.records += page.records.len() as u64;
        tracing::debug!(event = "page", records = page.records.len(), origin = ?origin);
        match self.tx.send(FetchedPage { records: page.records, origin }).await {
            Ok(()) => WindowResult::Done,
            Err(_) => WindowResult::Closed,
        }
    }
}

enum WindowResult {
    Done,
    TooBig,
    /// The receiving side stopped (it failed) or a shutdown was asked for; stop fetching.
    Closed,
}

fn record_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let rec: IdOnly = serde_json::from_str(raw.get()).ok()?;
    let id = rec.id?.get();
    Some(id.trim_matches('"').to_string())
}
