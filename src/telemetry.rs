//! Logging set-up: human text on a terminal, one JSON object per line otherwise, with the `severity`,
//! `message` and `time` keys Cloud Logging lifts out of a line (`gcp` adds its labels). Logs go to stderr so
//! that stdout stays free for NDJSON rows. `RUST_LOG` filters as usual; the default is `info`.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{json, Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`LOG_FORMAT`, any case). Default: text on a terminal, JSON otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    /// JSON with the special keys Cloud Logging lifts out of a line.
    Gcp,
}

/// When the process started (set first thing in `main`), for the time-to-first-request figure.
pub static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Microseconds since the process started (or since first asked, in tests).
pub fn micros_since_start() -> u64 {
    PROCESS_START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

static HUMAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether a person is watching (text logs on a terminal, no `--quiet`): progress bars and the human summary
/// line show only then.
pub fn human_output() -> bool {
    HUMAN.get() == Some(&true)
}

/// Installs the global subscriber. Safe to call once per process. `color` is false when `NO_COLOR` is set;
/// `quiet` (`--quiet`) logs warnings and errors only, unless `RUST_LOG` says otherwise.
pub fn init(format: Option<LogFormat>, color: bool, quiet: bool) {
    let terminal = std::io::stderr().is_terminal();
    let format = format.unwrap_or(if terminal { LogFormat::Text } else { LogFormat::Json });
    let _ = HUMAN.set(format == LogFormat::Text && terminal && !quiet);
    let default = if quiet { "warn" } else { "info" };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // The HTTP and auth libraries log requests and answers at debug level, Google's token exchanges included
    // (client secrets, refresh tokens, access tokens): capped whatever RUST_LOG says.
    for capped in ["yup_oauth2=warn", "hyper=warn", "hyper_util=warn", "reqwest=warn", "h2=warn", "rustls=warn"] {
        filter = filter.add_directive(capped.parse().expect("a valid directive"));
    }
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(color && terminal);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).compact().try_init(),
        LogFormat::Json | LogFormat::Gcp => builder.event_format(JsonLine { gcp: format == LogFormat::Gcp }).try_init(),
    };
}

/// One JSON object per event: `time`, `severity`, `message`, `target`, then the event's own fields.
pub struct JsonLine {
    pub gcp: bool,
}

/// Fields whose value is a JSON document: a JSON log line carries them as objects, not as strings, so that
/// log-based metrics can read into them (`jsonPayload.won_amount_by_currency.EUR`).
pub const JSON_FIELDS: [&str; 4] = ["won_amount_by_currency", "missing", "extra", "ids"];

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let severity = match meta.level().as_str() {
            "WARN" => "WARNING",
            "TRACE" => "DEBUG",
            level => level,
        };
        // tracing-subscriber's JSON field formatter keeps each value's type: numbers and booleans stay so.
        let mut text = String::new();
        JsonFields::new().format_fields(Writer::new(&mut text), event)?;
        let mut fields: Map<String, Value> = serde_json::from_str(&text).map_err(|_| fmt::Error)?;
        for name in JSON_FIELDS {
            if let Some(json) = fields.get(name).and_then(Value::as_str).and_then(|v| serde_json::from_str(v).ok()) {
                fields.insert(name.to_string(), json);
            }
        }
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let message = fields.remove("message").unwrap_or_else(|| Value::from(""));
        let mut line = json!({ "time": time, "severity": severity, "message": message, "target": meta.target() });
        if let (true, Some(run_id)) = (self.gcp, fields.get("run_id")) {
            line["logging.googleapis.com/labels"] = json!({ "run_id": run_id });
        }
        let obj = line.as_object_mut().expect("an object");
        for (k, v) in fields {
            obj.entry(k).or_insert(v);
        }
        writeln!(writer, "{line}")
    }
}

/// Text from a server as it may be logged or stored: each secret value given (and its form-encoded spelling)
/// becomes `[redacted]` and the user-info of URLs is dropped, so an echoed secret stays out of logs and the
/// ledger. JSON stays JSON (it is redacted before it is parsed); `one_line` then escapes what was parsed.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        out = out.replace(&encoded, "[redacted]");
    }
    let mut parts = out.split("://");
    let mut clean = parts.next().unwrap_or_default().to_string();
    for after_scheme in parts {
        let authority_end = after_scheme.find(|c: char| "/?#\"".contains(c) || c.is_whitespace());
        let authority = &after_scheme[..authority_end.unwrap_or(after_scheme.len())];
        clean.push_str("://");
        clean.push_str(&after_scheme[authority.rfind('@').map_or(0, |i| i + 1)..]);
    }
    clean
}

/// Text for one log line: control characters (a line break that would forge a line, terminal escapes) escaped.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn secrets_user_info_and_line_breaks_never_pass() {
        let got = super::redact(
            "bad client_secret=s3cr%2Bet or s3cr+et at https://u:pw@accounts.example/x\n{\"event\":\"forged\"}",
            &["s3cr+et"],
        );
        assert_eq!(
            got,
            "bad client_secret=[redacted] or [redacted] at https://accounts.example/x\n{\"event\":\"forged\"}"
        );
        assert_eq!(
            super::one_line(&got),
            "bad client_secret=[redacted] or [redacted] at https://accounts.example/x\\n{\"event\":\"forged\"}"
        );
    }
}
