//! `dealsync verify`: the reconciliation alone, for a window given with `--from`/`--to`. It writes nothing and
//! prints the comparison as JSON; any difference between Zoho and the warehouse exits 3.

use chrono::Utc;

use super::sync::{log_reconciliation, new_run_id, open_sink, RunError};
use crate::config::cli::SyncPlan;
use crate::config::{Config, Needs};
use crate::exit::Exit;
use crate::zoho::ZohoClient;

/// `dealsync verify`: reconciliation alone. 0 when the warehouse agrees with Zoho, 3 when it does not.
pub async fn verify(plan: SyncPlan, config: &Config) -> Exit {
    let started_at = Utc::now();
    let run_id = new_run_id(started_at);
    let result: Result<bool, RunError> = async {
        let needs = if plan.demo.is_some() { Needs::Nothing } else { Needs::ZohoCredentials };
        let settings = config.settings(needs)?;
        let window = crate::window::resolve(&plan.spec, plan.field, started_at, None).map_err(RunError::Usage)?;
        // The demo simulator lives as long as this block.
        let mut demo = None;
        let zoho = match plan.demo {
            Some((deals, seed)) => {
                let (d, s) = crate::commands::demo::Demo::start(deals, seed, config.max_concurrency()?)
                    .await
                    .map_err(RunError::Demo)?;
                demo = Some(d);
                s
            }
            None => settings.zoho.clone().expect("credentials were required"),
        };
        let client = ZohoClient::new(zoho, plan.retry, plan.request_timeout)?;
        let mut sink = open_sink(&plan, &settings, &run_id, started_at).await?;
        let outcome = match super::reconcile::verify(&client, sink.as_mut(), &window).await {
            Ok(Some(r)) => {
                log_reconciliation(&run_id, &r);
                println!("{}", serde_json::to_string(&r).expect("serializes"));
                Ok(r.matches)
            }
            Ok(None) => Err(RunError::Usage(format!("{} keeps nothing to compare", sink.describe()))),
            Err(super::reconcile::ReconcileError::Zoho(e)) => Err(e.into()),
            Err(super::reconcile::ReconcileError::Sink(e)) => Err(e.into()),
        };
        if let Some(d) = demo {
            d.stop().await;
        }
        outcome
    }
    .await;
    match result {
        Ok(true) => Exit::Ok,
        Ok(false) => Exit::Partial,
        Err(e) => {
            tracing::error!(event = "verify_failed", "{e}");
            e.exit()
        }
    }
}
