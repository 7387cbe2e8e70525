//! Newline-delimited JSON: one row per line, to a file or to stdout. An export, not a warehouse: no run ledger
//! (the default window is always the last 24 hours), no merge across runs; a deal that comes back on another
//! page reaches it again only as a newer copy, a second line. `--dry-run` uses it on stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::{Ending, Finished, SinkError, WriteStats};
use crate::exit::Exit;
use crate::schema::{Column, DealRow, Quarantined};

pub struct NdjsonSink {
    path: Option<PathBuf>,
    dry_run: bool,
    out: Option<Box<dyn Write + Send>>,
    quarantine: Option<BufWriter<File>>,
    /// The columns a line holds, in order.
    columns: Vec<Column>,
}

/// Told once a dry run's reader went away (`main` ends the process quietly then, like any Unix filter).
static STDOUT_CLOSED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Resolves once a write to stdout found its reader gone (`dealsync sync --dry-run | head`).
pub async fn stdout_closed() {
    STDOUT_CLOSED.notified().await;
}

impl NdjsonSink {
    /// Lines of `columns` (the standard ones, then the promoted ones) to `path`; `None` writes to stdout.
    pub fn new(path: Option<PathBuf>, columns: Vec<Column>) -> Self {
        NdjsonSink { path, dry_run: false, out: None, quarantine: None, columns }
    }

    /// Rows of `columns` to stdout, nothing persisted.
    pub fn dry_run(columns: Vec<Column>) -> Self {
        NdjsonSink { dry_run: true, ..NdjsonSink::new(None, columns) }
    }

    /// Where quarantined records go: beside the output file, or `./dealsync-quarantine.ndjson` for stdout.
    pub fn quarantine_path(&self) -> PathBuf {
        let Some(p) = &self.path else { return "dealsync-quarantine.ndjson".into() };
        let mut s = p.clone().into_os_string();
        s.push(".quarantine.ndjson");
        s.into()
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> SinkError {
        SinkError::new(self.describe(), format!("{what}: {e}"), Exit::Internal)
    }

    /// A failed write of rows. When a dry run's reader went away (`| head`), `main` is told and ends the process
    /// quietly; the run waits here to be dropped. An export whose reader went away has lost rows: a failure.
    async fn out_err(&self, what: &str, e: std::io::Error) -> SinkError {
        if self.path.is_some() || e.kind() != std::io::ErrorKind::BrokenPipe {
            return self.io_err(what, e);
        }
        if self.dry_run {
            STDOUT_CLOSED.notify_one();
            std::future::pending::<()>().await;
        }
        SinkError::new(self.describe(), "stdout was closed by its reader before every row was written", Exit::Internal)
    }

    pub fn describe(&self) -> String {
        match (&self.path, self.dry_run) {
            (_, true) => "dry-run (stdout)".into(),
            (None, _) => "ndjson:-".into(),
            (Some(p), _) => format!("ndjson:{}", p.display()),
        }
    }

    pub async fn check(&mut self) -> Result<Vec<String>, SinkError> {
        let Some(p) = &self.path else { return Ok(vec!["rows go to stdout".into()]) };
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            let problem = format!("the directory {} does not exist", dir.display());
            return Err(SinkError::new(self.describe(), problem, Exit::Config));
        }
        Ok(vec![format!("{} can be written", p.display())])
    }

    pub async fn prepare(&mut self) -> Result<(), SinkError> {
        let out: Box<dyn Write + Send> = match &self.path {
            None => Box::new(BufWriter::new(std::io::stdout())),
            Some(p) => {
                let f = crate::files::create(p, 0o600).map_err(|e| {
                    let exit = if e.kind() == std::io::ErrorKind::NotFound { Exit::Config } else { Exit::Internal };
                    SinkError::new(self.describe(), format!("creating {}: {e}", p.display()), exit)
                })?;
                Box::new(BufWriter::with_capacity(1 << 16, f))
            }
        };
        self.out = Some(out);
        if !self.dry_run {
            // The export and its quarantine file belong to one run: a clean export leaves no quarantine beside it.
            let q = self.quarantine_path();
            match std::fs::remove_file(&q) {
                Ok(()) => tracing::info!(event = "quarantine_cleared", path = %q.display(),
                    "removed the previous run's quarantine file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_err(&format!("removing {}", q.display()), e)),
            }
        }
        Ok(())
    }

    pub async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats, SinkError> {
        // A line is its `raw` record and (typically) under a kilobyte of typed columns.
        let mut buf = Vec::with_capacity(rows.iter().map(|r| r.raw().get().len() + 1024).sum());
        for row in &rows {
            row.write_json_line(&self.columns, &mut buf);
        }
        let out = self.out.as_mut().expect("prepare() opens the output");
        if let Err(e) = out.write_all(&buf) {
            return Err(self.out_err("writing rows", e).await);
        }
        Ok(WriteStats { inserted: rows.len() as u64, ..WriteStats::default() })
    }

    pub async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<(), SinkError> {
        if self.dry_run {
            return Ok(());
        }
        if self.quarantine.is_none() {
            let path = self.quarantine_path();
            let f = crate::files::create(&path, 0o600)
                .map_err(|e| self.io_err(&format!("creating {}", path.display()), e))?;
            self.quarantine = Some(BufWriter::new(f));
        }
        let q = self.quarantine.as_mut().expect("just opened");
        let written = items.iter().try_for_each(|item| {
            serde_json::to_writer(&mut *q, item)?;
            q.write_all(b"\n")
        });
        written.map_err(|e| self.io_err("writing quarantined records", e))
    }

    /// Flushes what is buffered, so that a reader following the file sees the rows written so far.
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(Err(e)) = self.out.as_mut().map(|out| out.flush()) {
            return Err(self.out_err("flushing rows", e).await);
        }
        if let Some(Err(e)) = self.quarantine.as_mut().map(|q| q.flush()) {
            return Err(self.io_err("flushing quarantined records", e));
        }
        Ok(())
    }

    /// Flushes; the lines written stay whether the run completed or stopped.
    pub async fn finish(&mut self, ending: Ending) -> Result<Finished, SinkError> {
        let kept = match (self.flush().await, ending) {
            (Err(e), Ending::Complete) => return Err(e),
            (Ok(()), _) => format!("the lines written so far are in {}", self.describe()),
            (Err(e), Ending::Stopped) => format!("the lines written before this error are in {}: {e}", self.describe()),
        };
        Ok(Finished { stats: WriteStats::default(), kept })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{map_json, Mapped, RunStamp};

    #[tokio::test]
    async fn a_pause_flushes_rows_still_in_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let mut sink = NdjsonSink::new(Some(path.clone()), crate::schema::columns(&[]));
        sink.prepare().await.unwrap();
        let stamp: RunStamp = "run-1".parse().unwrap();
        let Mapped::Row(row) =
            map_json(r#"{"id":"5001","Stage":"Closed Won","Modified_Time":"2026-10-01T10:00:00+05:30"}"#, &stamp)
        else {
            panic!("maps")
        };
        sink.write_rows(vec![*row]).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 0, "one short row waits in the buffer");
        sink.flush().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"deal_id\":\"5001\""), "{text}");
    }
}
