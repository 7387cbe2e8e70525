//! After writing, the warehouse is checked against the CRM for the same window: Zoho's own count of deals
//! whose stage is exactly "Closed Won" (COQL `COUNT(id)`; the one the run took to plan its fetch, if it took
//! one, otherwise asked for now) against the rows the warehouse holds. On a mismatch
//! both id lists are compared and up to 20 missing or extra deal ids are named. Users' most common complaint
//! about sync tools is revenue figures that disagree with the CRM; this says so on the night it happens.

use serde::Serialize;

use crate::sink::{Sink, SinkError};
use crate::window::Window;
use crate::zoho::criteria::{coql_count_closed_won, coql_keyset_page};
use crate::zoho::{ZohoClient, ZohoError};

/// Ids named per side at most.
pub const NAMED: usize = 20;
const ID_PAGE: u32 = 2000;

#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub crm: u64,
    pub warehouse: u64,
    pub matches: bool,
    /// In the CRM, not in the warehouse (up to 20).
    pub missing: Vec<String>,
    /// In the warehouse, not in the CRM (up to 20).
    pub extra: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Zoho(#[from] ZohoError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Compares the window; `None` when the sink keeps nothing to compare (NDJSON, dry run). `counted`: Zoho's count
/// for the window if the run already asked for it (as it planned the fetch), which saves asking again.
pub async fn reconcile(
    client: &ZohoClient,
    sink: &mut dyn Sink,
    window: &Window,
    counted: Option<u64>,
) -> Result<Option<Reconciliation>, ReconcileError> {
    let Some(warehouse) = sink.count_in_window(window).await? else { return Ok(None) };
    let crm = match counted {
        Some(n) => n,
        None => client.coql_count(&coql_count_closed_won(window)).await?,
    };
    let mut r = Reconciliation { crm, warehouse, matches: crm == warehouse, missing: Vec::new(), extra: Vec::new() };
    if !r.matches {
        let ours = sink.ids_in_window(window).await?;
        let theirs = crm_ids(client, window).await?;
        let (missing, extra) = diff(&theirs, &ours);
        r.missing = missing;
        r.extra = extra;
        // Equal counts can hide a swap; unequal counts with equal sets cannot happen, but say what was seen.
        r.matches = r.missing.is_empty() && r.extra.is_empty() && crm == warehouse;
    }
    Ok(Some(r))
}

/// Up to `NAMED` ids of each side's difference; both inputs sorted.
fn diff(crm: &[String], warehouse: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let key = |s: &String| (s.len(), s.clone());
    while i < crm.len() || j < warehouse.len() {
        match (crm.get(i), warehouse.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if key(a) < key(b) => {
                if missing.len() < NAMED {
                    missing.push(a.clone());
                }
                i += 1;
            }
            (Some(_), Some(b)) => {
                if extra.len() < NAMED {
                    extra.push(b.clone());
                }
                j += 1;
            }
            (Some(a), None) => {
                if missing.len() < NAMED {
                    missing.push(a.clone());
                }
                i += 1;
            }
            (None, Some(b)) => {
                if extra.len() < NAMED {
                    extra.push(b.clone());
                }
                j += 1;
            }
            (None, None) => break,
        }
    }
    (missing, extra)
}

/// Sorts numeric ids by value (shorter first), others as text, so both sides sort alike.
pub fn sort_ids(ids: &mut [String]) {
    ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
}

/// Every closed-won deal id in the window, from COQL, `id > last` at a time.
async fn crm_ids(client: &ZohoClient, window: &Window) -> Result<Vec<String>, ZohoError> {
    let mut ids = Vec::new();
    client
        .coql_keyset(
            ID_PAGE,
            |after| coql_keyset_page("id", "=", window, after, ID_PAGE),
            |r| ids.extend(crate::zoho::fetch::record_id(&r)),
        )
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
        let (missing, extra) = diff(&v(&["1", "2", "10", "11"]), &v(&["2", "3", "11"]));
        assert_eq!(missing, vec!["1", "10"]);
        assert_eq!(extra, vec!["3"]);
    }

    #[test]
    fn diff_names_at_most_twenty_per_side() {
        let crm: Vec<String> = (100..200).map(|i| i.to_string()).collect();
        let (missing, extra) = diff(&crm, &[]);
        assert_eq!((missing.len(), extra.len()), (NAMED, 0));
    }
}
