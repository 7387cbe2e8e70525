//! The second phase of a run: fetch → map → write. The fetcher's tasks map each page where it was read (its text
//! is freed then); one writer hands the mapped pages to the sink. A bounded channel joins them, so memory stays
//! flat however many deals a window holds, and a slow sink slows the fetching. Then the completeness proof: the
//! deals fetched against Zoho's count, or its id listing, and what is missing read by id.

use std::collections::HashSet;

use tokio::sync::mpsc;

use super::error::RunError;
use super::reconcile::Completeness;
use super::summary::{Progress, RunSummary};
use crate::mapping::{Mapped, Mapper, RunStamp};
use crate::schema::{sort_ids, DealRow, Quarantined};
use crate::shutdown::Shutdown;
use crate::sink::seen::Seen;
use crate::sink::{Sink, SinkError};
use crate::window::Window;
use crate::zoho::fetch::{FetchedPage, Fetcher};
use crate::zoho::ZohoClient;

/// Pages buffered between fetching and writing.
const PIPELINE_DEPTH: usize = 4;
/// How long the writer waits for a page before letting the sink make what it holds visible (`Sink::flush`).
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// Times the deals missing from a run are read by id, each after a fresh listing (deals change while a run reads).
const REPAIR_ROUNDS: usize = 3;

pub enum Job {
    Window(Window),
    Ids(Vec<String>),
}

/// The run's fetching and writing, pass after pass, counted in the run's summary.
pub struct Pipeline<'a> {
    client: &'a ZohoClient,
    sink: &'a mut Sink,
    window: &'a Window,
    stamp: &'a RunStamp,
    shutdown: &'a Shutdown,
    summary: &'a mut RunSummary,
    /// Each deal written, once (a deal that comes back on another page is written again only as a newer copy).
    rows: Seen,
    quarantined: HashSet<String>,
    /// Deals whose copy lies outside the window (read by id after an edit moved them on).
    moved_on: HashSet<String>,
    /// The fields search returned, for the next pass's reads by id.
    fields: Vec<String>,
    progress: Progress,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        client: &'a ZohoClient,
        sink: &'a mut Sink,
        window: &'a Window,
        stamp: &'a RunStamp,
        shutdown: &'a Shutdown,
        summary: &'a mut RunSummary,
    ) -> Pipeline<'a> {
        let progress = Progress::start();
        let (rows, quarantined, moved_on, fields) = Default::default();
        Pipeline { client, sink, window, stamp, shutdown, summary, rows, quarantined, moved_on, fields, progress }
    }

    fn has(&self, id: &str) -> bool {
        self.rows.contains(id) || self.quarantined.contains(id)
    }

    /// Distinct deals fetched: rows and quarantined records with an id.
    fn distinct(&self) -> u64 {
        (self.rows.len() + self.quarantined.iter().filter(|id| !self.rows.contains(id)).count()) as u64
    }

    /// Fetches `job` and writes what the fetcher sends, both at once, until the fetcher is done and the writer has
    /// joined. A shutdown stops fetching at once and writing after the page in progress.
    pub async fn pass(&mut self, job: Job) -> Result<(), RunError> {
        let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
        let stamp = self.stamp;
        let fetcher = Fetcher::new(self.client, tx, move |page| map_page(page, stamp), self.shutdown.clone())
            .expected(self.progress.expected.clone())
            .reading(stamp.columns.zoho_fields())
            .with_fields(self.fields.clone());
        let producer = async move {
            let fetched = match job {
                Job::Window(w) => fetcher.fetch_window(w).await,
                Job::Ids(ids) => fetcher.fetch_ids(ids).await,
            };
            (fetched, fetcher.stats(), fetcher.fields())
        };
        let ((fetched, stats, fields), writer) = tokio::join!(producer, self.write(rx));
        self.summary.fetched.add(stats);
        if !fields.is_empty() {
            self.fields = fields;
        }
        // The sink's error explains a closed channel; otherwise the fetch error stands.
        let writer_stopped = writer?;
        if fetched? || writer_stopped {
            let reason = self.shutdown.reason().unwrap_or_else(|| "the writer".into());
            return Err(RunError::Interrupted(reason));
        }
        Ok(())
    }

    /// Writes pages until the channel closes; `true` when a shutdown stopped it first.
    async fn write(&mut self, mut rx: mpsc::Receiver<MappedPage>) -> Result<bool, SinkError> {
        loop {
            let page = tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ok(true),
                page = rx.recv() => match page {
                    Some(p) => p,
                    None => return Ok(false),
                },
                () = tokio::time::sleep(IDLE_FLUSH) => {
                    self.summary.rows.add(self.sink.flush().await?);
                    continue;
                }
            };
            self.write_page(page).await?;
            self.progress.set(self.distinct());
        }
    }

    async fn write_page(&mut self, page: MappedPage) -> Result<(), SinkError> {
        let MappedPage { rows, quarantined, not_closed_won } = page;
        let summary = &mut *self.summary;
        summary.deals_fetched += (rows.len() + quarantined.len()) as u64 + not_closed_won;
        summary.not_closed_won += not_closed_won;
        summary.quarantined += quarantined.len() as u64;
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if !self.rows.offer(row.deal_id(), row.modified_time().timestamp()) {
                summary.rows.unchanged += 1;
                continue;
            }
            if !self.window.holds(row.modified_time(), row.closing_date()) {
                self.moved_on.insert(row.deal_id().to_string());
            }
            if let Some(a) = row.amount() {
                // Looked up before inserting: a currency's name is allocated once a run, not once a row.
                let currency = row.currency().unwrap_or("(none)");
                match summary.won_amount_by_currency.get_mut(currency) {
                    Some(total) => *total += a,
                    None => drop(summary.won_amount_by_currency.insert(currency.to_string(), a)),
                }
            }
            fresh.push(row);
        }
        self.quarantined.extend(quarantined.iter().filter_map(|q| q.deal_id.clone()));
        if !fresh.is_empty() {
            summary.rows.add(self.sink.write_rows(fresh).await?);
        }
        if !quarantined.is_empty() {
            self.sink.write_quarantine(quarantined).await?;
        }
        Ok(())
    }

    /// Checks that the run fetched every closed-won deal Zoho has in the window, and reads the missing ones by id
    /// (the summary's `repaired` counts them, also when the run is stopped on the way).
    pub async fn complete(&mut self) -> Result<Completeness, RunError> {
        let window = self.window;
        let (counted, fetched) = (self.summary.fetched.root_count.unwrap_or(0), self.distinct());
        // Only a Modified_Time window is proven by its count: an edit moves a deal out of it, never into it (its end
        // is settled), so the deals fetched after the count are among the deals counted. An edit can move a closing
        // date anywhere, and a quarantined record's stage is unknown, so it may not be one of the deals counted.
        if fetched == counted && self.quarantined.is_empty() && !window.field.is_date() {
            let moved_on = std::mem::take(&mut self.moved_on);
            return Ok(Completeness { crm: counted, moved_on, ..Default::default() });
        }
        let (mut missing, mut round) = (Vec::new(), 0);
        let listed = loop {
            // Read by id, deals were lost, deleted or moved out of the window since the listing (or Zoho could not
            // give them yet): what counts is what Zoho lists now.
            let (still, listings) = (missing.len(), std::cell::Cell::new(0));
            let mut listed = self.client.closed_won_ids(window, || listings.set(listings.get() + 1)).await?;
            self.summary.fetched.listings += listings.get();
            sort_ids(&mut listed);
            missing = listed.iter().filter(|id| !self.has(id)).cloned().collect();
            if round == 0 {
                tracing::info!(event = "completeness", counted, fetched, listed = listed.len(), missing = missing.len(),
                    "Zoho counted {counted} closed-won deals in the window and lists {}; the run fetched {fetched}; {} to read by id",
                    listed.len(), missing.len());
            } else {
                tracing::info!(event = "completeness", round, listed = listed.len(), missing = missing.len(),
                    "{still} deals could not be read by id; Zoho lists {} closed-won deals in the window now, {} of them not fetched",
                    listed.len(), missing.len());
            }
            if missing.is_empty() {
                break listed;
            }
            round += 1;
            // What a pass wrote counts as repaired even when it was stopped on the way.
            let passed = self.pass(Job::Ids(missing.clone())).await;
            let asked = missing.len();
            missing.retain(|id| !self.has(id));
            self.summary.repaired += (asked - missing.len()) as u64;
            passed?;
            if missing.is_empty() || round == REPAIR_ROUNDS {
                break listed;
            }
        };
        let repaired = self.summary.repaired;
        if repaired > 0 {
            tracing::info!(
                event = "repaired",
                repaired,
                "read {repaired} closed-won deals by id that search did not return"
            );
        }
        let moved_on = std::mem::take(&mut self.moved_on);
        Ok(Completeness { crm: listed.len() as u64, listed: Some(listed), missing, moved_on })
    }
}

/// One page's records, mapped by the task that fetched it: each is a row, quarantined, or not closed won.
pub struct MappedPage {
    rows: Vec<DealRow>,
    quarantined: Vec<Quarantined>,
    not_closed_won: u64,
}

fn map_page(page: FetchedPage, stamp: &RunStamp) -> MappedPage {
    let rows = Vec::with_capacity(page.page.len());
    let mut mapped = MappedPage { rows, quarantined: Vec::new(), not_closed_won: 0 };
    let mut mapper = Mapper::new(stamp);
    // An ordered page's last second is read again with the rest of its slice.
    for rec in page.page.records().take(page.keep.unwrap_or(usize::MAX)) {
        match mapper.map(&rec) {
            Mapped::Row(row) => mapped.rows.push(*row),
            Mapped::NotClosedWon { deal_id, stage } => {
                mapped.not_closed_won += 1;
                tracing::debug!(
                    event = "not_closed_won",
                    deal_id = deal_id.as_deref().unwrap_or(""),
                    stage = stage.as_deref().unwrap_or(""),
                    "skipped a deal whose stage only contains \"Closed Won\""
                );
            }
            Mapped::Quarantined(q) => {
                tracing::warn!(event = "quarantined", deal_id = q.deal_id.as_deref().unwrap_or(""),
                    reason = %q.reason, "a record could not be mapped; it was quarantined");
                mapped.quarantined.push(*q);
            }
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Needs, Settings};
    use crate::mapping::{map_json, Columns};
    use crate::window::WindowField;

    fn page(ids: std::ops::Range<u64>) -> MappedPage {
        let stamp: RunStamp = "run-1".parse().unwrap();
        let rows: Vec<DealRow> = ids
            .map(|i| {
                let json =
                    format!(r#"{{"id":"{}","Stage":"Closed Won","Modified_Time":"2026-10-01T10:00:00Z"}}"#, 5000 + i);
                match map_json(&json, &stamp) {
                    Mapped::Row(r) => *r,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        MappedPage { rows, quarantined: Vec::new(), not_closed_won: 0 }
    }

    /// Rows another connection sees: only committed ones.
    fn committed(path: &std::path::Path) -> i64 {
        let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row("SELECT count(*) FROM closed_won_deals", [], |r| r.get(0)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_flushes_the_sink_while_no_page_comes_and_keeps_writing_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut sink = Sink::Sqlite(crate::sink::sqlite::SqliteSink::new(&path, Default::default()));
        sink.prepare().await.unwrap();
        let vars = [("ZOHO_CLIENT_ID", "id"), ("ZOHO_CLIENT_SECRET", "secret"), ("ZOHO_REFRESH_TOKEN", "token")];
        let vars = vars.map(|(k, v)| (k.to_string(), v.to_string()));
        let zoho = Settings::from_vars(vars, Needs::ZohoCredentials).unwrap().zoho.unwrap();
        let client = ZohoClient::new(zoho, Default::default(), std::time::Duration::from_secs(30)).unwrap();
        let start = "2026-10-01T00:00:00Z".parse().unwrap();
        let window = Window::new(WindowField::ModifiedTime, start, start + chrono::Duration::days(1)).unwrap();
        let columns = std::sync::Arc::new(Columns::new(&[]));
        let stamp = RunStamp { run_id: "run-1".into(), synced_at: chrono::Utc::now(), columns };
        let shutdown = Shutdown::default();
        let mut summary = RunSummary::default();
        let mut p = Pipeline::new(&client, &mut sink, &window, &stamp, &shutdown, &mut summary);

        let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
        let feed = async {
            tx.send(page(0..200)).await.unwrap();
            tokio::time::sleep(IDLE_FLUSH / 2).await;
            assert_eq!(committed(&path), 0, "a page's rows wait in the open transaction");
            tokio::time::sleep(IDLE_FLUSH).await;
            assert_eq!(committed(&path), 200, "no page for IDLE_FLUSH: what the sink holds is committed");
            tx.send(page(200..400)).await.unwrap();
            tokio::time::sleep(IDLE_FLUSH * 2).await;
            assert_eq!(committed(&path), 400, "the writer keeps writing, and flushing, after a flush");
            drop(tx);
        };
        let (stopped, ()) = tokio::join!(p.write(rx), feed);
        assert!(!stopped.unwrap(), "the writer ends when the channel closes");
        assert_eq!((p.summary.deals_fetched, p.summary.rows.inserted), (400, 400));
    }
}
