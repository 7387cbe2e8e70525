//! Load jobs fed by a resumable upload: rows go into the upload as they are mapped, gzipped NDJSON in chunks
//! of `CHUNK` bytes, and only the last chunk creates the job, which loads every row or none. Nothing is held
//! whole in memory and nothing is written to disk (Cloud Run's disk is memory); loading is free, where
//! streaming inserts are billed. (bqemulator cannot read gzip uploads: towards it the NDJSON goes plain.)

use std::io::Write;

use flate2::{write::GzEncoder, Compression};
use serde_json::{json, Value};

use super::client::Api;
use super::error::{BqFailure, Kind, Result};
use super::jobs::{Done, JobResource};
use crate::schema::{write_object, Column};

/// Bytes a chunk carries: Google asks for multiples of 256 KiB. 4 MiB keeps a 1M-deal backfill under the memory
/// budget (BENCHMARKS.md) at a request a few thousand rows.
pub const CHUNK: usize = 4 * 1024 * 1024;

/// One load job in the making: its upload session, once the first chunk is due.
pub struct Upload {
    job_id: String,
    configuration: Value,
    columns: Vec<Column>,
    session: Option<String>,
    row: Vec<u8>,
    /// What is not sent yet: gzipped, or plain towards the emulator.
    out: Out,
    /// Bytes BigQuery holds.
    sent: u64,
    pub rows: u64,
}

impl Upload {
    /// A load of NDJSON rows appended to `table` (in the sink's dataset) of `columns`, under `job_id`: a retried
    /// upload or insert is the same job, so the rows land once.
    pub fn new(job_id: String, project: &str, dataset: &str, table: &str, columns: &[Column], gzip: bool) -> Upload {
        let configuration = json!({"load": {
            "destinationTable": {"projectId": project, "datasetId": dataset, "tableId": table},
            "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "schema": {"fields": columns},
            "createDisposition": "CREATE_NEVER",
            "writeDisposition": "WRITE_APPEND",
            "ignoreUnknownValues": false,
        }});
        let buffer = Vec::with_capacity(CHUNK + 64 * 1024);
        let out = if gzip { Out::Gzip(GzEncoder::new(buffer, Compression::fast())) } else { Out::Plain(buffer) };
        let columns = columns.to_vec();
        Upload { job_id, configuration, columns, session: None, row: Vec::new(), out, sent: 0, rows: 0 }
    }

    /// Adds a row of `values` in the upload's column order; sends a chunk once the buffer holds one.
    pub async fn push(&mut self, api: &Api, what: &str, values: &[crate::schema::Value]) -> Result<()> {
        write_object(&self.columns, values, &mut self.row);
        self.append();
        // Strictly more: the last chunk always keeps a byte, so that it can carry the total.
        if self.out.bytes().len() > CHUNK {
            self.send_chunk(api, what).await?;
        }
        Ok(())
    }

    /// Bytes of the upload so far, sent or not (compressed, when it is).
    pub fn size(&mut self) -> u64 {
        self.sent + self.out.bytes().len() as u64
    }

    fn append(&mut self) {
        self.row.push(b'\n');
        self.rows += 1;
        match &mut self.out {
            Out::Gzip(gz) => gz.write_all(&self.row).expect("compressing into memory"),
            Out::Plain(buf) => buf.extend_from_slice(&self.row),
        }
        self.row.clear();
    }

    /// Everything not sent yet, the gzip trailer included: the last chunk.
    fn rest(&mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.out, Out::Plain(Vec::new())) {
            Out::Gzip(gz) => gz.finish().expect("compressing into memory"),
            Out::Plain(buf) => buf,
        }
    }

    async fn session(&mut self, api: &Api, what: &str) -> Result<String> {
        if self.session.is_none() {
            let job = api.job(&self.job_id, &self.configuration).await?;
            self.session = Some(api.start_upload(what, &job).await?);
        }
        Ok(self.session.clone().expect("started above"))
    }

    async fn send_chunk(&mut self, api: &Api, what: &str) -> Result<()> {
        let session = self.session(api, what).await?;
        // The chunk leaves the buffer without a copy; the few bytes past it start the next one.
        let buffer = self.out.bytes();
        let mut next = buffer.split_off(CHUNK);
        // Room for a whole chunk at once: a buffer that doubled as it grew would copy itself, twice the memory.
        next.reserve(CHUNK + 64 * 1024);
        let chunk = std::mem::replace(buffer, next);
        if api.put_chunk::<JobResource>(what, &session, self.sent, chunk, None).await?.is_some() {
            return Err(BqFailure::new(what, "BigQuery ended the upload before its last chunk", Kind::Local));
        }
        self.sent += CHUNK as u64;
        Ok(())
    }

    /// Sends the rest, which creates the load job, and waits for it: every row is in the table, or none.
    pub async fn finish(mut self, api: &Api, what: &str) -> Result<Done> {
        let session = self.session(api, what).await?;
        let rest = self.rest();
        let total = self.sent + rest.len() as u64;
        let Some(job) = api.put_chunk::<JobResource>(what, &session, self.sent, rest, Some(total)).await? else {
            return Err(BqFailure::new(what, "BigQuery did not take the upload's last bytes", Kind::Local));
        };
        api.wait(what, &self.job_id, job.job_reference).await
    }
}

enum Out {
    Gzip(GzEncoder<Vec<u8>>),
    Plain(Vec<u8>),
}

impl Out {
    fn bytes(&mut self) -> &mut Vec<u8> {
        match self {
            Out::Gzip(gz) => gz.get_mut(),
            Out::Plain(buf) => buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_a_multiple_of_256_kib() {
        assert_eq!(CHUNK % (256 * 1024), 0);
    }

    #[test]
    fn the_chunks_and_the_rest_are_the_rows_as_gzipped_ndjson() {
        for gzip in [true, false] {
            let mut u = Upload::new("j".into(), "p", "d", "t", &[], gzip);
            let mut want = String::new();
            let mut sent = Vec::new();
            for i in 0..200_000 {
                let line = format!(r#"{{"deal_id":"{i}","note":"{}"}}"#, "x".repeat(i % 97));
                want.push_str(&line);
                want.push('\n');
                u.row.extend_from_slice(line.as_bytes());
                u.append();
                if u.out.bytes().len() > CHUNK {
                    let next = u.out.bytes().split_off(CHUNK);
                    sent.extend(std::mem::replace(u.out.bytes(), next));
                }
            }
            assert!(gzip || sent.len() >= CHUNK, "plain rows fill more than a chunk");
            sent.extend(u.rest());
            let got = if gzip {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&sent[..]), &mut text).unwrap();
                text
            } else {
                String::from_utf8(sent).unwrap()
            };
            assert_eq!(got, want, "gzip: {gzip}");
            assert_eq!(u.rows, 200_000);
        }
    }
}
