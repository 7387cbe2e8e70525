//! After writing, the warehouse is checked against the CRM for the same window: Zoho's closed-won deals (the
//! count or listing the run's completeness check took, otherwise asked for now) against the live rows the
//! warehouse holds. When the numbers differ, both id lists are compared and up to 20 missing or extra deal
//! ids are named. Users' most common complaint about sync tools is revenue figures that disagree with the
//! CRM; this says so on the night it happens.
//!
//! A sync fails the check only for deals it is missing: rows the warehouse holds that Zoho no longer lists in
//! the window were edited, lost or deleted since they were written, and the run that covers their new
//! modification time updates them. `dealsync verify` is stricter and names both sides.

use serde::Serialize;

use crate::sink::{Sink, SinkError};
use crate::window::Window;
use crate::zoho::criteria::{coql_count_closed_won, coql_keyset_page};
use crate::zoho::{ZohoClient, ZohoError};

/// Whether the run fetched every closed-won deal of its window, and what it took.
#[derive(Debug, Clone, Default)]
pub struct Completeness {
    /// Zoho's closed-won deals in the window: the count taken before the first search, or the listing's size.
    pub crm: u64,
    /// Zoho's closed-won ids in the window (sorted), when they were listed (the count did not match).
    pub listed: Option<Vec<String>>,
    /// Deals search did not return, read by id.
    pub repaired: u64,
    /// Deals still missing after that (sorted).
    pub missing: Vec<String>,
    /// Deals whose copy lies outside the window (edited since they were listed).
    pub moved_on: std::collections::HashSet<String>,
    /// The run stopped before the proof was made.
    pub stopped: bool,
}

/// Ids named per side at most.
pub const NAMED: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub crm: u64,
    pub warehouse: u64,
    pub matches: bool,
    /// In the CRM, not in the warehouse (up to 20).
    pub missing: Vec<String>,
    /// In the warehouse, not in the CRM (up to 20).
    pub extra: Vec<String>,
    /// How many are missing and extra in all (the lists name 20 at most).
    pub missing_total: u64,
    pub extra_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Zoho(#[from] ZohoError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Compares the window after a sync; `None` when the sink keeps nothing to compare (NDJSON, dry run). `known`:
/// what the run's completeness check learned from Zoho, which saves asking again. Extra rows alone match.
pub async fn reconcile(
    client: &ZohoClient,
    sink: &mut dyn Sink,
    window: &Window,
    known: Option<&Completeness>,
) -> Result<Option<Reconciliation>, ReconcileError> {
    compare(client, sink, window, known, false).await
}

/// `dealsync verify`: the same comparison, where any difference is a mismatch.
pub async fn verify(
    client: &ZohoClient,
    sink: &mut dyn Sink,
    window: &Window,
) -> Result<Option<Reconciliation>, ReconcileError> {
    compare(client, sink, window, None, true).await
}

async fn compare(
    client: &ZohoClient,
    sink: &mut dyn Sink,
    window: &Window,
    known: Option<&Completeness>,
    strict: bool,
) -> Result<Option<Reconciliation>, ReconcileError> {
    let Some(warehouse) = sink.count_in_window(window).await? else { return Ok(None) };
    let crm = match known {
        Some(c) => c.crm,
        None => client.coql_count(&coql_count_closed_won(window)).await?,
    };
    let mut r = Reconciliation {
        crm,
        warehouse,
        matches: crm == warehouse,
        missing: Vec::new(),
        extra: Vec::new(),
        missing_total: 0,
        extra_total: 0,
    };
    if !r.matches {
        let ours = sink.ids_in_window(window).await?;
        let theirs = match known.and_then(|c| c.listed.clone()) {
            Some(listed) => listed,
            None => crm_ids(client, window).await?,
        };
        let moved_on = known.map(|c| &c.moved_on);
        let (missing, extra) = diff(&theirs, &ours, |id| moved_on.is_some_and(|m| m.contains(id)));
        (r.missing_total, r.extra_total) = (missing.0, extra.0);
        (r.missing, r.extra) = (missing.1, extra.1);
        r.matches = r.missing_total == 0 && (!strict || r.extra_total == 0);
    }
    Ok(Some(r))
}

/// Each side's difference (both inputs sorted): how many, and up to `NAMED` of them. A CRM id for which
/// `elsewhere` holds (the run wrote it with a newer copy outside the window) is not missing.
fn diff(
    crm: &[String],
    warehouse: &[String],
    elsewhere: impl Fn(&str) -> bool,
) -> ((u64, Vec<String>), (u64, Vec<String>)) {
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut extra) = ((0u64, Vec::new()), (0u64, Vec::new()));
    let key = |s: &String| (s.len(), s.clone());
    let note = |side: &mut (u64, Vec<String>), id: &String| {
        side.0 += 1;
        if side.1.len() < NAMED {
            side.1.push(id.clone());
        }
    };
    while i < crm.len() || j < warehouse.len() {
        match (crm.get(i), warehouse.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if key(a) < key(b) => {
                if !elsewhere(a) {
                    note(&mut missing, a);
                }
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                note(&mut extra, b);
                j += 1;
            }
            (Some(a), None) => {
                if !elsewhere(a) {
                    note(&mut missing, a);
                }
                i += 1;
            }
            (None, None) => break,
        }
    }
    (missing, extra)
}

pub use crate::schema::sort_ids;

/// Every closed-won deal id in the window, from COQL, `id > last` at a time.
async fn crm_ids(client: &ZohoClient, window: &Window) -> Result<Vec<String>, ZohoError> {
    let mut ids = Vec::new();
    client
        .coql_keyset(|after| coql_keyset_page("id", "=", window, after), |r| ids.extend(crate::zoho::record_id(r)))
        .await?;
    sort_ids(&mut ids);
    Ok(ids)
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
