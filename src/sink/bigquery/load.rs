//! Load jobs fed by a resumable upload: rows go into the upload as they are mapped, in chunks of
//! `CHUNK` bytes, and only the last chunk creates the job, which loads every row or none. Nothing is held
//! whole in memory and nothing is written to disk (Cloud Run's disk is memory); loading is free, where
//! streaming inserts are billed.

use serde_json::{json, Value};

use super::client::Put;
use super::error::BqFailure;
use super::jobs::{Done, JobResource, Jobs};

/// Bytes a chunk carries: Google asks for multiples of 256 KiB and recommends at least 8 MiB.
pub const CHUNK: usize = 8 * 1024 * 1024;

/// One load job in the making: its upload session, once the first chunk is due.
pub struct Upload {
    job_id: String,
    /// The load job's `configuration`.
    configuration: Value,
    session: Option<String>,
    buffer: Vec<u8>,
    /// Bytes BigQuery holds.
    sent: u64,
    pub rows: u64,
}

impl Upload {
    /// A load of NDJSON rows appended to `table` (in the sink's dataset) of `schema`, under `job_id`: a retried
    /// upload or insert is the same job, so the rows land once.
    pub fn new(job_id: String, project: &str, dataset: &str, table: &str, schema: Value) -> Upload {
        let configuration = json!({"load": {
            "destinationTable": {"projectId": project, "datasetId": dataset, "tableId": table},
            "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "schema": schema,
            "createDisposition": "CREATE_NEVER",
            "writeDisposition": "WRITE_APPEND",
            "ignoreUnknownValues": false,
        }});
        Upload { job_id, configuration, session: None, buffer: Vec::with_capacity(CHUNK), sent: 0, rows: 0 }
    }

    /// Where the next row is written (one JSON object, then `push_row`).
    pub fn line(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Ends the row just written; sends a chunk once the buffer holds one.
    pub async fn push_row(&mut self, jobs: &Jobs<'_>, what: &str) -> Result<(), BqFailure> {
        self.buffer.push(b'\n');
        self.rows += 1;
        // Strictly more: the last chunk always keeps a byte, so that it can carry the total.
        if self.buffer.len() > CHUNK {
            self.send_chunk(jobs, what).await?;
        }
        Ok(())
    }

    async fn session(&mut self, jobs: &Jobs<'_>, what: &str) -> Result<String, BqFailure> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let job = jobs.job(&self.job_id, self.configuration.clone());
        let s = jobs.api.start_upload(what, &job).await?;
        self.session = Some(s.clone());
        Ok(s)
    }

    async fn send_chunk(&mut self, jobs: &Jobs<'_>, what: &str) -> Result<(), BqFailure> {
        let session = self.session(jobs, what).await?;
        let chunk: Vec<u8> = self.buffer.drain(..CHUNK).collect();
        match jobs.api.put_chunk::<JobResource>(what, &session, self.sent, &chunk, None).await? {
            Put::Incomplete(held) => self.sent = held,
            Put::Done(_) => return Err(BqFailure::local(what, "BigQuery ended the upload before its last chunk")),
        }
        Ok(())
    }

    /// Sends the rest, which creates the load job, and waits for it: every row is in the table, or none.
    pub async fn finish(mut self, jobs: &Jobs<'_>, what: &str) -> Result<Done, BqFailure> {
        let session = self.session(jobs, what).await?;
        let rest = std::mem::take(&mut self.buffer);
        let total = self.sent + rest.len() as u64;
        let job = match jobs.api.put_chunk::<JobResource>(what, &session, self.sent, &rest, Some(total)).await? {
            Put::Done(job) => jobs.reference(&self.job_id, job.job_reference),
            Put::Incomplete(_) => return Err(BqFailure::local(what, "BigQuery did not take the upload's last bytes")),
        };
        jobs.wait(what, job).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunk_is_a_multiple_of_256_kib() {
        assert_eq!(super::CHUNK % (256 * 1024), 0);
    }
}
