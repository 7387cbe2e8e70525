//! Run metrics for monitoring, on every exit (a usage error included): the Prometheus text format, pushed to a
//! Pushgateway (one group per `job="dealsync"`, `instance`, `kind` and `shard`, so that backfills never touch the
//! nightly run's gauges) and/or written to a node_exporter textfile. Both keep the last success time when a run
//! fails, so that "no success for 26 hours" can be alerted on; a gauge not measured is left out, not 0.

use url::Url;

use super::summary::RunSummary;
use crate::config::{Config, ConfigError};
use crate::exit::Exit;

/// Where the metrics go, validated before the run starts.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub pushgateway: Option<(Url, String)>,
    pub file: Option<std::path::PathBuf>,
}

impl Targets {
    /// `DEALSYNC_PUSHGATEWAY_URL` (http or https: a Pushgateway is an internal service and holds nothing secret)
    /// and `DEALSYNC_INSTANCE` (default `default`: one group for the deployment, however many pods ran it).
    pub fn from_config(config: &Config, file: Option<std::path::PathBuf>) -> Result<Targets, ConfigError> {
        let var = "DEALSYNC_PUSHGATEWAY_URL";
        let Some(raw) = config.var(var) else { return Ok(Targets { pushgateway: None, file }) };
        // Echoed without user-info: a password in the URL must not reach the error.
        let v = crate::telemetry::redact(raw, &[]);
        let bad = |problem: String| ConfigError::new(var, format!("`{v}` {problem}"));
        let url = Url::parse(raw).map_err(|e| bad(format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad("is not an http(s) URL such as http://pushgateway:9091".into()));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("must be a base URL without credentials, query or fragment".into()));
        }
        let instance = config.var("DEALSYNC_INSTANCE").unwrap_or("default").to_string();
        Ok(Targets { pushgateway: Some((url, instance)), file })
    }
}

pub const METRICS: [(&str, &str); 9] = [
    ("dealsync_last_run_timestamp_seconds", "When the last run finished (Unix time)."),
    ("dealsync_last_success_timestamp_seconds", "When the last run that exited 0 finished (Unix time)."),
    (
        "dealsync_last_partial_timestamp_seconds",
        "When the last run that exited 3 (done, but quarantined or missing deals) finished (Unix time).",
    ),
    ("dealsync_last_exit_code", "Exit code of the last run (0 ok, 3 needs a look, 75 transient, 78 configuration)."),
    ("dealsync_rows_written", "Deals the last run wrote (new or replaced by a newer copy)."),
    ("dealsync_rows_quarantined", "Records the last run quarantined."),
    ("dealsync_rows_repaired", "Closed-won deals search missed that the last run read by id."),
    ("dealsync_run_duration_seconds", "How long the last run took."),
    (
        "dealsync_reconciliation_missing",
        "Closed-won deals Zoho has in the window that the warehouse lacks after the run (absent when not reconciled).",
    ),
];

/// The run's metrics in the Prometheus text format, labelled with `labels` (`sink="…"`, …). The last success and
/// the last partial run are this run's when it was one, else carried over from `before`, the text this one replaces
/// ("" for a Pushgateway, which keeps what a push leaves out). A value not measured is left out.
pub fn render(s: &RunSummary, labels: &str, finished_unix: f64, before: &str) -> String {
    let last = |i: usize, this_run: bool| if this_run { Some(finished_unix) } else { previous(before, METRICS[i].0) };
    let values: [Option<f64>; 9] = [
        Some(finished_unix),
        last(1, s.exit == Exit::Ok),
        last(2, s.exit == Exit::Partial),
        Some(f64::from(s.exit.code())),
        Some(s.rows.written() as f64),
        Some(s.quarantined as f64),
        Some(s.repaired as f64),
        Some(s.duration_ms as f64 / 1000.0),
        s.crm_closed_won.zip(s.warehouse_closed_won).map(|(crm, warehouse)| crm.saturating_sub(warehouse) as f64),
    ];
    let mut out = String::new();
    for ((name, help), value) in METRICS.iter().zip(values) {
        if let Some(v) = value {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}\n"));
        }
    }
    out
}

/// A label value in the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
}

/// The value of the metric `name` in a text the previous run wrote.
fn previous(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// Publishes the run's metrics where asked. A failure is logged as a warning and never changes the exit code: the
/// warehouse is as the run left it, and a stale metric is what the alerts watch for.
pub async fn publish(targets: &Targets, s: &RunSummary) {
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    if let Some(path) = &targets.file {
        let before = std::fs::read_to_string(path).unwrap_or_default();
        let labels = format!("sink=\"{}\",kind=\"{}\"", label(&s.sink), s.kind);
        // Readable by node_exporter's group, never by everyone, whatever the umask.
        match crate::files::replace(path, &render(s, &labels, now, &before), 0o640) {
            Ok(()) => tracing::info!(event = "metrics_written", path = %path.display(), "run metrics written"),
            Err(e) => {
                tracing::warn!(event = "metrics_failed", path = %path.display(), "could not write the metrics file: {e}")
            }
        }
    }
    if let Some((base, instance)) = &targets.pushgateway {
        // `kind` and `shard` are grouping labels: the Pushgateway adds them to every metric of the group.
        let body = render(s, &format!("sink=\"{}\"", label(&s.sink)), now, "");
        match push(base, instance, s, body).await {
            Ok(()) => {
                tracing::info!(event = "metrics_pushed", instance = %instance, "run metrics pushed to the Pushgateway")
            }
            Err(e) => tracing::warn!(event = "metrics_failed", instance = %instance, "could not push the metrics: {e}"),
        }
    }
}

/// POST replaces only the metrics of the same names in the group `job="dealsync", instance=…, kind=…[, shard=…]`:
/// a failed run, which sends no last success time, leaves the previous one in place.
async fn push(base: &Url, instance: &str, s: &RunSummary, body: String) -> Result<(), String> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| "the URL cannot take a path".to_string())?
        .pop_if_empty()
        .extend(["metrics", "job", "dealsync", "instance", instance, "kind", s.kind])
        .extend(s.shard.iter().flat_map(|shard| ["shard", shard.as_str()]));
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(format!("POST {url}: HTTP {status}: {}", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_keeps_the_last_success_and_the_last_partial_of_the_file_it_replaces() {
        let (success, partial) = (METRICS[1].0, METRICS[2].0);
        let ok = RunSummary {
            exit: Exit::Ok,
            sink: "sqlite:a\"b.db".into(),
            rows: crate::sink::WriteStats { inserted: 5, updated: 2, ..Default::default() },
            ..Default::default()
        };
        let labels = format!("sink=\"{}\"", label(&ok.sink));
        let text = render(&ok, &labels, 1000.5, "");
        assert!(text.contains("dealsync_rows_written{sink=\"sqlite:a\\\"b.db\"} 7\n"), "{text}");
        assert_eq!(previous(&text, success), Some(1000.5));
        assert!(!text.contains("dealsync_reconciliation_missing"), "not reconciled: absent, not 0");
        let failed = RunSummary { exit: Exit::Unavailable, ..Default::default() };
        let text = render(&failed, "sink=\"\"", 2000.0, &text);
        assert!(text.contains("dealsync_last_exit_code{sink=\"\"} 75\n"));
        assert_eq!(previous(&text, success), Some(1000.5), "a failure keeps the last success");
        assert!(!render(&failed, "", 2000.0, "").contains(success), "nothing to carry over: absent");
        let exit3 = RunSummary {
            exit: Exit::Partial,
            crm_closed_won: Some(10),
            warehouse_closed_won: Some(8),
            ..Default::default()
        };
        let text = render(&exit3, "", 3000.0, &text);
        assert_eq!((previous(&text, partial), previous(&text, success)), (Some(3000.0), Some(1000.5)), "{text}");
        assert!(text.contains("dealsync_reconciliation_missing{} 2\n"), "{text}");
        let text = render(&ok, "", 4000.0, &text);
        assert_eq!((previous(&text, partial), previous(&text, success)), (Some(3000.0), Some(4000.0)), "{text}");
    }
}
