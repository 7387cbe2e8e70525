//! The completeness proof, once the window's pass is written: the distinct deals fetched against Zoho's count
//! taken before the first search (a `Modified_Time` window only loses deals as they are edited, so equal numbers
//! mean the same deals), and otherwise against Zoho's id listing, reading what is missing by id in further
//! passes. It runs after the writer has joined, so the ids it compares are final, and a repair's pages take
//! the window's path to the sink.

use super::error::RunError;
use super::pipeline::{Job, Pipeline};
use super::reconcile::Completeness;
use crate::schema::sort_ids;
use crate::window::Window;

/// Times the deals missing from a run are read by id, each after a fresh listing (deals change while a run reads).
const REPAIR_ROUNDS: usize = 3;

/// Checks that the run fetched every closed-won deal Zoho has in the window, and reads the missing ones by id
/// (`Pipeline::repaired` counts them, also when the run is stopped on the way).
pub async fn complete(p: &mut Pipeline<'_>, window: &Window) -> Result<Completeness, RunError> {
    let (counted, fetched) = (p.fetched.root_count.unwrap_or(0), p.ids.distinct());
    // Only a Modified_Time window is proven by its count: an edit moves a deal out of it, never into it (its end
    // is settled), so the deals fetched after the count are among the deals counted. An edit can move a closing
    // date anywhere, and a quarantined record's stage is unknown, so it may not be one of the deals counted.
    if fetched == counted && p.ids.quarantined() == 0 && !window.field.is_date() {
        return Ok(Completeness { crm: counted, moved_on: std::mem::take(&mut p.ids.moved_on), ..Default::default() });
    }
    let (mut missing, mut round) = (Vec::new(), 0);
    let listed = loop {
        // Read by id, deals were lost, deleted or moved out of the window since the listing (or Zoho could not
        // give them yet): what counts is what Zoho lists now.
        let (fetcher, rx) = p.fetcher();
        let still = missing.len();
        let mut listed = fetcher.list_ids(window).await?;
        sort_ids(&mut listed);
        missing = listed.iter().filter(|id| !p.ids.has(id)).cloned().collect();
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
            p.keep_counts(&fetcher);
            break listed;
        }
        round += 1;
        // What a pass wrote counts as repaired even when it was stopped on the way.
        let passed = p.pass(fetcher, rx, Job::Ids(missing.clone())).await;
        let asked = missing.len();
        missing.retain(|id| !p.ids.has(id));
        p.repaired += (asked - missing.len()) as u64;
        passed?;
        if missing.is_empty() || round == REPAIR_ROUNDS {
            break listed;
        }
    };
    if p.repaired > 0 {
        tracing::info!(
            event = "repaired",
            repaired = p.repaired,
            "read {} closed-won deals by id that search did not return",
            p.repaired
        );
    }
    let moved_on = std::mem::take(&mut p.ids.moved_on);
    Ok(Completeness { crm: listed.len() as u64, listed: Some(listed), missing, moved_on })
}
