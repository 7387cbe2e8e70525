//! Rows as BigQuery's `insertAll` wants them, written straight from `DealRow` into the gzipped request body:
//! no `serde_json::Value` per row. Decimals travel as strings (NUMERIC keeps them exact), instants as RFC 3339
//! UTC, and the JSON columns (`raw`, promoted `json` fields) as JSON-encoded strings, as the API requires.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::mapping::promoted::Value;
use crate::json::Raw;
use crate::mapping::{decimal_text, instant_text, DealRow, Short};

/// A deal row in BigQuery's JSON shape.
pub struct BqRow<'a>(pub &'a DealRow);

fn dec(d: &Option<rust_decimal::Decimal>) -> Option<Short> {
    d.as_ref().map(decimal_text)
}

impl Serialize for BqRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(Some(crate::mapping::COLUMNS.len() + r.extras.values.len()))?;
        m.serialize_entry("deal_id", &r.deal_id)?;
        m.serialize_entry("deal_name", &r.deal_name)?;
        m.serialize_entry("stage", &r.stage)?;
        m.serialize_entry("amount", &dec(&r.amount))?;
        m.serialize_entry("expected_revenue", &dec(&r.expected_revenue))?;
        m.serialize_entry("exchange_rate", &dec(&r.exchange_rate))?;
        m.serialize_entry("currency", &r.currency)?;
        m.serialize_entry("probability", &r.probability)?;
        m.serialize_entry("closing_date", &r.closing_date)?;
        m.serialize_entry("account_id", &r.account_id)?;
        m.serialize_entry("account_name", &r.account_name)?;
        m.serialize_entry("contact_id", &r.contact_id)?;
        m.serialize_entry("contact_name", &r.contact_name)?;
        m.serialize_entry("owner_id", &r.owner_id)?;
        m.serialize_entry("owner_name", &r.owner_name)?;
        m.serialize_entry("owner_email", &r.owner_email)?;
        m.serialize_entry("pipeline", &r.pipeline)?;
        m.serialize_entry("type", &r.deal_type)?;
        m.serialize_entry("lead_source", &r.lead_source)?;
        m.serialize_entry("tags", &r.tags)?;
        m.serialize_entry("created_time", &r.created_time.as_ref().map(instant_text))?;
        m.serialize_entry("modified_time", &instant_text(&r.modified_time))?;
        m.serialize_entry("raw", r.raw.get())?;
        m.serialize_entry("sync_run_id", &r.sync_run_id)?;
        m.serialize_entry("synced_at", &instant_text(&r.synced_at))?;
        m.serialize_entry("is_closed_won", &r.is_closed_won)?;
        m.serialize_entry("is_deleted", &r.is_deleted)?;
        m.serialize_entry("deleted_time", &r.deleted_time.as_ref().map(instant_text))?;
        for (p, v) in r.extras.columns.iter().zip(&r.extras.values) {
            match v {
                Value::Json(j) => m.serialize_entry(p.column, j.get())?,
                v => m.serialize_entry(p.column, v)?,
            }
        }
        m.end()
    }
}

/// One staged row: its insert id and its JSON object, serialized once when it joins a batch.
pub struct StagedRow {
    pub insert_id: String,
    pub json: Raw,
}

impl StagedRow {
    pub fn new(row: &DealRow) -> StagedRow {
        let json = serde_json::to_string(&BqRow(row)).expect("rows serialize");
        StagedRow {
            insert_id: format!("{}:{}", row.deal_id, row.modified_time.timestamp()),
            // serde_json wrote it: no need to check it again.
            json: Raw::checked(json),
        }
    }

    /// Bytes this row adds to a request body.
    pub fn size(&self) -> usize {
        self.json.get().len() + self.insert_id.len() + 24
    }
}

/// The gzipped `insertAll` body for `rows` (insert id, the row's JSON), with the same options as the client's
/// own request type.
pub fn insert_all_body<'a>(rows: impl Iterator<Item = (&'a str, &'a Raw)>) -> Vec<u8> {
    // Writing into memory cannot fail.
    body(rows).expect("compressing into memory")
}

fn body<'a>(rows: impl Iterator<Item = (&'a str, &'a Raw)>) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(b"{\"ignoreUnknownValues\":false,\"rows\":[")?;
    for (i, (insert_id, json)) in rows.enumerate() {
        if i > 0 {
            gz.write_all(b",")?;
        }
        gz.write_all(b"{\"insertId\":")?;
        serde_json::to_writer(&mut gz, insert_id)?;
        gz.write_all(b",\"json\":")?;
        gz.write_all(json.get().as_bytes())?;
        gz.write_all(b"}")?;
    }
    gz.write_all(b"],\"skipInvalidRows\":false}")?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::promoted::{FieldType, Promoted};
    use crate::mapping::{map_json, Mapped, RunStamp};

    static PROMOTED: [Promoted; 2] = [
        Promoted { field: "Layout", column: "layout", ty: FieldType::Json },
        Promoted { field: "Seats", column: "seats", ty: FieldType::Integer },
    ];

    fn row() -> DealRow {
        let raw = r#"{"id":"42","Stage":"Closed Won","Amount":0.10,"Modified_Time":"2026-11-27T10:00:00+05:30",
            "Closing_Date":"2026-11-27","Tag":[{"name":"a"}],"Layout":{"id":"7","name":"Std"},"Seats":12,
            "Deal_Name":"quote \" and \\ backslash"}"#;
        let stamp = RunStamp { promoted: &PROMOTED, .."run-1".parse::<RunStamp>().unwrap() };
        match map_json(raw, &stamp) {
            Mapped::Row(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_row_serializes_like_the_generic_row_with_json_columns_as_strings() {
        let r = row();
        // The generic serialization, with the JSON columns re-encoded as strings, is the reference.
        let mut want = serde_json::to_value(&r).unwrap();
        want["raw"] = serde_json::Value::String(r.raw.get().to_string());
        want["layout"] = serde_json::Value::String(r#"{"id":"7","name":"Std"}"#.into());
        let got: serde_json::Value = serde_json::from_str(&serde_json::to_string(&BqRow(&r)).unwrap()).unwrap();
        assert_eq!(got, want);
        assert_eq!(got["amount"], "0.1");
        assert_eq!(got["seats"], 12);
        assert_eq!(got["modified_time"], "2026-11-27T04:30:00Z");
    }

    #[test]
    fn the_body_is_the_request_the_client_would_send() {
        let r = row();
        let staged = StagedRow::new(&r);
        let body = insert_all_body([(staged.insert_id.as_str(), &staged.json)].into_iter());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).unwrap();
        let got: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut req = gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest::new();
        req.add_row(Some(staged.insert_id.clone()), BqRow(&r)).unwrap();
        assert_eq!(got, serde_json::to_value(&req).unwrap());
        assert!(staged.size() >= staged.json.get().len());
    }
}
