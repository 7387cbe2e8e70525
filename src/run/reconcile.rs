//! The warehouse checked against Zoho for the same window, so that revenue figures that disagree with the CRM
//! are reported the night it happens. A sync fails it only for missing deals (an extra row was edited, lost or
//! deleted since, and a later run updates it); `dealsync verify` fails on either side.

use std::collections::HashSet;

use serde::Serialize;

use super::error::RunError;
use crate::schema::sort_ids;
use crate::sink::Sink;
use crate::window::Window;
use crate::zoho::criteria::coql_count_closed_won;
use crate::zoho::ZohoClient;

/// Whether the run fetched every closed-won deal of its window, and what it took.
#[derive(Debug, Clone, Default)]
pub struct Completeness {
    /// Zoho's closed-won deals in the window: the count taken before the first search, or the listing's size.
    pub crm: u64,
    /// Zoho's closed-won ids in the window (sorted), when they were listed (the count did not match).
    pub listed: Option<Vec<String>>,
    /// Deals still missing after that (sorted).
    pub missing: Vec<String>,
    /// Deals whose copy lies outside the window (edited since they were listed).
    pub moved_on: HashSet<String>,
}

/// Ids named per side at most.
pub const NAMED: usize = 20;

type Named = (u64, Vec<String>);

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub crm: u64,
    pub warehouse: u64,
    pub matches: bool,
    /// In the CRM, not in the warehouse, and the other way round (`NAMED` at most each, `*_total` counts all).
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub missing_total: u64,
    pub extra_total: u64,
}

impl Reconciliation {
    /// The `reconciliation` event: a match, extra rows only, or a mismatch naming both sides.
    pub fn log(&self, run_id: &str) {
        // JSON arrays: a JSON log line carries them as arrays (telemetry::JSON_FIELDS), a person reads them as such.
        let missing = serde_json::to_string(&self.missing).expect("strings serialize");
        let extra = serde_json::to_string(&self.extra).expect("strings serialize");
        if self.matches && self.extra_total == 0 {
            tracing::info!(event = "reconciliation", run_id = %run_id, outcome = "match", crm = self.crm, warehouse = self.warehouse,
                "the warehouse holds the {} closed-won deals Zoho has in the window", self.crm);
        } else if self.matches {
            tracing::warn!(event = "reconciliation", run_id = %run_id, outcome = "extra", crm = self.crm, warehouse = self.warehouse,
                extra = %extra, extra_total = self.extra_total,
                "the warehouse holds every closed-won deal Zoho has in the window, and {} rows Zoho no longer lists there \
                 (edited, lost or deleted since they were written; the run covering their new modification time updates them): {extra}",
                self.extra_total);
        } else {
            tracing::warn!(event = "reconciliation", run_id = %run_id, outcome = "mismatch", crm = self.crm, warehouse = self.warehouse,
                missing = %missing, extra = %extra, missing_total = self.missing_total, extra_total = self.extra_total,
                "Zoho has {} closed-won deals in the window, the warehouse holds {}; missing {}: {missing}, extra {}: {extra}",
                self.crm, self.warehouse, self.missing_total, self.extra_total);
        }
    }
}

/// Compares the window's closed-won deals in Zoho with the warehouse's live rows; `None` when the sink keeps
/// nothing to compare (NDJSON, dry run). `known`: what a sync's completeness check learned from Zoho, which saves
/// asking again. Extra rows alone match, unless `strict` (`dealsync verify`).
pub async fn reconcile(
    client: &ZohoClient,
    sink: &mut Sink,
    window: &Window,
    known: Option<&Completeness>,
    strict: bool,
) -> Result<Option<Reconciliation>, RunError> {
    let Some(warehouse) = sink.count_in_window(window).await? else { return Ok(None) };
    let crm = if let Some(c) = known { c.crm } else { client.coql_count(&coql_count_closed_won(window)).await? };
    let ((missing_total, missing), (extra_total, extra)) = if crm == warehouse {
        Default::default()
    } else {
        let ours = sink.ids_in_window(window).await?;
        let mut asked;
        let theirs = match known.and_then(|c| c.listed.as_ref()) {
            Some(listed) => listed,
            None => {
                asked = client.closed_won_ids(window, || {}).await?;
                sort_ids(&mut asked);
                &asked
            }
        };
        let moved_on = known.map(|c| &c.moved_on);
        diff(theirs, &ours, |id| moved_on.is_some_and(|m| m.contains(id)))
    };
    let matches = missing_total == 0 && (!strict || extra_total == 0);
    Ok(Some(Reconciliation { crm, warehouse, matches, missing, extra, missing_total, extra_total }))
}

/// Each side's difference: how many, and up to `NAMED` of them in the order given. A CRM id for which
/// `elsewhere` holds (the run wrote it with a newer copy outside the window) is not missing.
fn diff(crm: &[String], warehouse: &[String], elsewhere: impl Fn(&str) -> bool) -> (Named, Named) {
    let in_crm: HashSet<&str> = crm.iter().map(String::as_str).collect();
    let in_warehouse: HashSet<&str> = warehouse.iter().map(String::as_str).collect();
    let missing: Vec<&String> = crm.iter().filter(|id| !in_warehouse.contains(id.as_str()) && !elsewhere(id)).collect();
    let extra: Vec<&String> = warehouse.iter().filter(|id| !in_crm.contains(id.as_str())).collect();
    let named = |ids: Vec<&String>| (ids.len() as u64, ids.into_iter().take(NAMED).cloned().collect());
    (named(missing), named(extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ids: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        sort_ids(&mut v);
        v
    }

    #[test]
    fn diff_names_both_sides() {
        let (missing, extra) = diff(&v(&["1", "2", "10", "11"]), &v(&["2", "3", "11"]), |_| false);
        assert_eq!(missing, (2, vec!["1".to_string(), "10".to_string()]));
        assert_eq!(extra, (1, vec!["3".to_string()]));
        let (missing, _) = diff(&v(&["1", "2", "10", "11"]), &v(&["2", "3", "11"]), |id| id == "10");
        assert_eq!(
            missing,
            (1, vec!["1".to_string()]),
            "a deal written with a newer copy outside the window is not missing"
        );
    }

    #[test]
    fn diff_names_at_most_twenty_per_side() {
        let crm: Vec<String> = (100..200).map(|i| i.to_string()).collect();
        let (missing, extra) = diff(&crm, &[], |_| false);
        assert_eq!((missing.0, missing.1.len(), extra.0), (100, NAMED, 0));
    }
}
