//! What happened to deals already in the warehouse: deleted in Zoho (its recycle bin, `/Deals/deleted`), or
//! moved out of "Closed Won" (reopened or lost). No open-source connector follows either; without them a
//! deleted or reopened deal stays "won" in the warehouse forever.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::criteria::coql_keyset_page;
use super::{read_id, ZohoClient, ZohoError};
use crate::window::{Window, WindowField};

/// A deal Zoho reports deleted.
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
        for r in p.records() {
            let Ok(w) = serde_json::from_str::<Wire>(r.get()) else { continue };
            let (Some(deal_id), Some(t)) =
                (w.id.and_then(read_id), w.deleted_time.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()))
            else {
                continue;
            };
            out.push(Deleted { deal_id, deleted_time: t.with_timezone(&Utc) });
        }
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
    client
        .coql_keyset(
            |after| coql_keyset_page("id, Stage, Modified_Time", "!=", window, after),
            |r| {
                let Ok(w) = serde_json::from_str::<Wire>(r.get()) else { return };
                let (Some(deal_id), Some(stage), Some(m)) = (
                    w.id.and_then(read_id),
                    w.stage,
                    w.modified.as_deref().and_then(|m| DateTime::parse_from_rfc3339(m).ok()),
                ) else {
                    return;
                };
                out.push(StageChange { deal_id, stage, modified_time: m.with_timezone(&Utc) });
            },
        )
        .await?;
    Ok(out)
}
