//! `dealsync verify`: the reconciliation alone, for a window given with `--from`/`--to`. It writes nothing and
//! prints the comparison as JSON; any difference between Zoho and the warehouse exits 3.

use chrono::Utc;

use crate::config::cli::SyncPlan;
use crate::config::Config;
use crate::exit::Exit;
use crate::run::error::RunError;
use crate::zoho::ZohoClient;

pub async fn verify(plan: SyncPlan, config: &Config) -> Exit {
    match reconcile(&plan, config).await {
        Ok(true) => Exit::Ok,
        Ok(false) => Exit::Partial,
        Err(e) => {
            tracing::error!(event = "verify_failed", "{e}");
            e.exit()
        }
    }
}

/// Whether the warehouse agrees with Zoho. The demo's simulator, if any, stops when `source` is dropped, on
/// every path out of here.
async fn reconcile(plan: &SyncPlan, config: &Config) -> Result<bool, RunError> {
    let started_at = Utc::now();
    let run_id = crate::run::new_run_id(started_at);
    let (settings, source) = crate::run::setup::source(config, plan.demo).await?;
    let window = crate::window::resolve(&plan.spec, plan.field, started_at, None).map_err(RunError::Usage)?;
    let client = ZohoClient::new(source.zoho.clone(), plan.retry, plan.request_timeout)?;
    let mut sink = crate::run::setup::open_sink(plan, &settings, &run_id).await?;
    let Some(r) = crate::run::reconcile::reconcile(&client, &mut sink, &window, None, true).await? else {
        return Err(RunError::Usage(format!("{} keeps nothing to compare", sink.describe())));
    };
    r.log(&run_id);
    println!("{}", serde_json::to_string(&r).expect("serializes"));
    Ok(r.matches)
}
