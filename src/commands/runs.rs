//! `dealsync runs`: the run ledger as history, so a person sees at a glance whether last night worked and when
//! the last good run was, for SQLite and BigQuery alike.

use chrono::Utc;

use crate::config::cli::{RunsArgs, RunsFormat};
use crate::config::{Config, Needs};
use crate::exit::Exit;
use crate::schema::PastRun;
use crate::sink::{Opening, Target};

pub async fn runs(args: RunsArgs, config: &Config) -> Exit {
    let settings = match config.settings(Needs::Nothing) {
        Ok(s) => s,
        Err(e) => return e.report(),
    };
    let target = match Target::chosen(args.sink.as_ref(), &settings, false) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let run_id = crate::run::new_run_id(Utc::now());
    let request_timeout = args.request_timeout.to_std().unwrap_or_default();
    let opening = Opening { request_timeout, ..Opening::new(&settings, &run_id) };
    let (runs, last_good) = match target.past_runs(opening, args.limit).await {
        Ok(Some(read)) => read,
        Ok(None) => {
            let ledgers = crate::sink::ledger_forms().join(" or --sink ");
            eprintln!("error: `{target}` keeps no run ledger; use --sink {ledgers}");
            return Exit::Usage;
        }
        Err(e) => {
            tracing::error!(event = "runs_failed", "{e}");
            return e.exit;
        }
    };
    match args.format {
        RunsFormat::Json => {
            println!("{}", serde_json::json!({ "sink": target.to_string(), "last_good": last_good, "runs": runs }))
        }
        RunsFormat::Table => print!("{}", table(&runs, last_good.as_ref(), Utc::now())),
    }
    Exit::Ok
}

/// The history for a person: the last good run first, then one line per run.
pub fn table(runs: &[PastRun], last_good: Option<&PastRun>, now: chrono::DateTime<Utc>) -> String {
    let mut out = String::new();
    match last_good {
        Some(g) => {
            let ago = now - g.finished_at;
            out.push_str(&format!(
                "last good scheduled run (the next nightly window starts from its end): {} ({}), finished {} ({}h{:02}m ago), window up to {}\n",
                g.run_id,
                g.status,
                g.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                ago.num_hours(),
                ago.num_minutes() % 60,
                g.window_end.format("%Y-%m-%d %H:%M:%SZ")
            ));
        }
        None => out.push_str("last good scheduled run: none recorded (the next nightly window is the last 24 hours)\n"),
    }
    if runs.is_empty() {
        out.push_str("no runs recorded\n");
        return out;
    }
    let at = |t: &chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    let header = ["STARTED", "RUN ID", "KIND", "WINDOW", "STATUS", "EXIT", "ROWS", "QUARANTINED", "DURATION", "ERROR"];
    let lines: Vec<[String; 10]> = runs
        .iter()
        .map(|r| {
            [
                at(&r.started_at),
                r.run_id.clone(),
                r.kind.clone(),
                format!("{} {} .. {}", r.window_field, at(&r.window_start), at(&r.window_end)),
                r.status.clone(),
                r.exit_code.to_string(),
                r.rows_written.to_string(),
                r.quarantined.to_string(),
                format!("{:.1}s", r.duration_seconds()),
                r.error.as_deref().map(one_line).unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&aligned(&header.map(String::from), &lines));
    out
}

/// A header and its lines in columns two spaces apart, each as wide as its widest cell.
pub fn aligned<const N: usize>(header: &[String; N], lines: &[[String; N]]) -> String {
    let rows: Vec<&[String; N]> = std::iter::once(header).chain(lines).collect();
    let widths: [usize; N] = std::array::from_fn(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0));
    let mut out = String::new();
    for cells in rows {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// An error on one line, cut to 80 characters: the full text is in the JSON form.
fn one_line(e: &str) -> String {
    let flat = e.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 80 {
        flat.chars().take(79).collect::<String>() + "…"
    } else {
        flat
    }
}
