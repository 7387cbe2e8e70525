//! `dealsync check`: the smoke test after a deploy. Credentials, one search request, the promoted fields against
//! Zoho's metadata, and the sink, without writing anything; one `ok`/`FAIL` line per check.

use chrono::Utc;

use super::sync::{new_run_id, open_sink, RunError};
use crate::config::cli::{CheckArgs, SyncPlan};
use crate::config::{ConfigError, Needs};
use crate::exit::Exit;
use crate::schema::Promoted;
use crate::window::Window;
use crate::zoho::ZohoClient;

/// `dealsync check`: credentials, one search request, and the sink, without writing anything. Prints one line
/// per check; exits with the code of the first failure.
pub async fn check(args: CheckArgs, config: &crate::config::Config) -> Exit {
    let started_at = Utc::now();
    let run_id = new_run_id(started_at);
    let mut failed: Option<Exit> = None;
    let mut report = |ok: Result<String, RunError>| match ok {
        Ok(line) => println!("ok    {line}"),
        Err(e) => {
            println!("FAIL  {e}");
            tracing::error!(event = "check_failed", "{e}");
            failed.get_or_insert(e.exit());
        }
    };
    let settings = match config.settings(Needs::ZohoCredentials) {
        Ok(s) => s,
        Err(e) => {
            report(Err(e.into()));
            return Exit::Config;
        }
    };
    report(Ok("configuration variables are valid".into()));
    let timeout = args.request_timeout.to_std().unwrap_or(std::time::Duration::from_secs(30));
    let policy = crate::retry::RetryPolicy { max_attempts: 2, ..Default::default() };
    let zoho = settings.zoho.clone().expect("credentials were required");
    match ZohoClient::new(zoho, policy, timeout) {
        Err(e) => report(Err(e.into())),
        Ok(client) => match client.authenticate().await {
            Err(e) => report(Err(e.into())),
            Ok(api) => {
                report(Ok(format!("Zoho minted an access token; API domain {api}")));
                let now = Utc::now().fixed_offset();
                let w = Window::new(crate::window::WindowField::ModifiedTime, now - chrono::Duration::minutes(1), now)
                    .expect("a one-minute window");
                let criteria = crate::zoho::criteria::closed_won_in(&w).to_string();
                report(
                    client
                        .search_page("Deals", &criteria, crate::zoho::SearchOrder::Default, 1, 1)
                        .await
                        .map(|_| "the Deals search API answers".to_string())
                        .map_err(RunError::from),
                );
                if !settings.promoted.is_empty() {
                    report(check_promoted(&client, &settings.promoted).await);
                }
            }
        },
    }
    let plan = SyncPlan {
        demo: None,
        spec: crate::window::WindowSpec::Default {
            overlap: chrono::Duration::zero(),
            index_lag: chrono::Duration::zero(),
        },
        field: crate::window::WindowField::ModifiedTime,
        sink: args.sink.clone(),
        dry_run: false,
        retry: policy,
        request_timeout: timeout,
        deadline: std::time::Duration::from_secs(3600),
        rewrite: false,
        metrics_file: None,
    };
    match open_sink(&plan, &settings, &run_id, started_at).await {
        Err(e) => report(Err(e)),
        Ok(mut sink) => match sink.check().await {
            Ok(lines) => lines.into_iter().for_each(|l| report(Ok(format!("{}: {l}", sink.describe())))),
            Err(e) => report(Err(e.into())),
        },
    }
    match failed {
        None => {
            println!("all checks passed");
            Exit::Ok
        }
        Some(exit) => exit,
    }
}

/// Every promoted field must exist in Zoho's Deals metadata, or its column would stay empty.
async fn check_promoted(client: &ZohoClient, promoted: &[Promoted]) -> Result<String, RunError> {
    let fields = client.fields("Deals").await?;
    let unknown: Vec<String> = promoted
        .iter()
        .filter(|p| !fields.iter().any(|f| f.api_name == p.field))
        .map(|p| format!("columns.{} promotes {}", p.column, p.field))
        .collect();
    if unknown.is_empty() {
        Ok(format!("the {} promoted fields exist in Zoho's Deals metadata", promoted.len()))
    } else {
        Err(ConfigError::new(
            "columns (config file)",
            format!("{}, which Zoho's Deals metadata does not list (see `dealsync fields`)", unknown.join("; ")),
        )
        .into())
    }
}
