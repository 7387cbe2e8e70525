//! Rows as BigQuery's `insertAll` wants them, written straight from `DealRow` into the gzipped request body:
//! no `serde_json::Value` per row. Decimals travel as strings (NUMERIC keeps them exact), instants as RFC 3339
//! UTC, and the JSON columns (`raw`, promoted `json` fields) as JSON-encoded strings, as the API requires.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::json::Raw;
use crate::schema::{Column, DealRow};

/// One staged row: its insert id and its JSON object, serialized once when it joins a batch.
pub struct StagedRow {
    pub insert_id: String,
    pub json: Raw,
}

impl StagedRow {
    /// The row in BigQuery's shape, in the table's column order: JSON columns as JSON-encoded strings.
    pub fn new(row: &DealRow, columns: &[Column]) -> StagedRow {
        let mut buf = Vec::with_capacity(row.raw().get().len() + 1024);
        row.write_json(columns, &mut buf, true);
        StagedRow {
            insert_id: format!("{}:{}", row.deal_id(), row.modified_time().timestamp()),
            // Written just now from valid parts: no need to check it again.
            json: Raw::checked(String::from_utf8(buf).expect("JSON is UTF-8")),
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
    use crate::mapping::{map_json, Columns, Mapped, RunStamp};
    use crate::schema::{FieldType, Promoted};

    fn row() -> (DealRow, Vec<Column>) {
        let raw = r#"{"id":"42","Stage":"Closed Won","Amount":0.10,"Modified_Time":"2026-11-27T10:00:00+05:30",
            "Closing_Date":"2026-11-27","Tag":[{"name":"a"}],"Layout":{"id":"7","name":"Std"},"Seats":12,
            "Deal_Name":"quote \" and \\ backslash"}"#;
        let promoted = [
            Promoted { field: "Layout".into(), column: "layout".into(), ty: FieldType::Json },
            Promoted { field: "Seats".into(), column: "seats".into(), ty: FieldType::Integer },
        ];
        let columns = std::sync::Arc::new(Columns::new(&promoted));
        let stamp = RunStamp { columns: columns.clone(), .."run-1".parse::<RunStamp>().unwrap() };
        match map_json(raw, &stamp) {
            Mapped::Row(r) => (*r, columns.columns().to_vec()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_row_serializes_every_column_with_json_columns_as_strings() {
        let (r, columns) = row();
        let got: serde_json::Value = serde_json::from_str(StagedRow::new(&r, &columns).json.get()).unwrap();
        assert_eq!(got.as_object().unwrap().len(), columns.len());
        assert_eq!(got["raw"], serde_json::Value::String(r.raw().get().to_string()));
        assert_eq!(got["layout"], serde_json::Value::String(r#"{"id":"7","name":"Std"}"#.into()));
        assert_eq!(got["amount"], "0.1");
        assert_eq!(got["seats"], 12);
        assert_eq!(got["tags"], serde_json::json!(["a"]));
        assert_eq!(got["modified_time"], "2026-11-27T04:30:00Z");
        assert_eq!(got["deal_name"], "quote \" and \\ backslash");
        assert_eq!(got["is_deleted"], false);
    }

    #[test]
    fn the_body_is_the_request_the_client_would_send() {
        let (r, columns) = row();
        let staged = StagedRow::new(&r, &columns);
        let body = insert_all_body([(staged.insert_id.as_str(), &staged.json)].into_iter());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).unwrap();
        let got: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut req = gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest::new();
        let json: serde_json::Value = serde_json::from_str(staged.json.get()).unwrap();
        req.add_row(Some(staged.insert_id.clone()), json).unwrap();
        assert_eq!(got, serde_json::to_value(&req).unwrap());
        assert!(staged.size() >= staged.json.get().len());
    }
}
