//! What happened to deals already in the warehouse: deleted in Zoho (its recycle bin, `/Deals/deleted`), or
//! moved out of "Closed Won" (reopened or lost). No open-source connector follows either; without them a
//! deleted or reopened deal stays "won" in the warehouse forever.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::criteria::coql_keyset_page;
use super::{read_id, ZohoClient, ZohoError};
use crate::window::{Window, WindowField};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub deal_id: String,
    pub deleted_time: DateTime<Utc>,
}

/// A deal whose stage is no longer "Closed Won".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageChange {
    pub deal_id: String,
    pub stage: String,
    pub modified_time: DateTime<Utc>,
}

fn utc(time: Option<String>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&time?).ok().map(|t| t.with_timezone(&Utc))
}

/// Every deal deleted since `since` (all pages).
pub async fn deleted_since(client: &ZohoClient, since: DateTime<Utc>) -> Result<Vec<Deleted>, ZohoError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        deleted_time: Option<String>,
    }
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let mut out = Vec::new();
    for page in 1.. {
        let Some(p) = client.deleted_page(&since, page).await? else { break };
        out.extend(p.records().filter_map(|r| {
            let w: Wire = serde_json::from_str(r.get()).ok()?;
            Some(Deleted { deal_id: read_id(w.id?)?, deleted_time: utc(w.deleted_time)? })
        }));
        if !p.more_records {
            break;
        }
    }
    Ok(out)
}

/// Deals modified in the window whose stage is not exactly "Closed Won", via COQL keyset paging: one request
/// per 2,000 such deals. Only `Modified_Time` windows can say when a stage changed.
pub async fn left_closed_won(client: &ZohoClient, window: &Window) -> Result<Vec<StageChange>, ZohoError> {
    if window.field != WindowField::ModifiedTime {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(rename = "Stage")]
        stage: Option<String>,
        #[serde(rename = "Modified_Time")]
        modified: Option<String>,
    }
    let mut out = Vec::new();
    let query = |after: Option<&str>| coql_keyset_page("id, Stage, Modified_Time", "!=", window, after);
    let each = |r: &RawValue| {
        let change = serde_json::from_str(r.get()).ok().and_then(|w: Wire| {
            Some(StageChange { deal_id: read_id(w.id?)?, stage: w.stage?, modified_time: utc(w.modified)? })
        });
        out.extend(change);
    };
    client.coql_keyset(query, each).await?;
    Ok(out)
}
