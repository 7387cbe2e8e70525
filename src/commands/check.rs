//! `dealsync check`: the smoke test after a deploy. Credentials, then every kind of Zoho call a sync makes (search,
//! COQL, the fields metadata, the deleted records, records by id), each naming the OAuth scope it needs, the
//! promoted fields against Zoho's metadata, and the sink, without writing anything; one `ok`/`FAIL` line a check.

use chrono::Utc;

use crate::config::cli::CheckArgs;
use crate::config::{ConfigError, Needs};
use crate::exit::Exit;
use crate::run::error::RunError;
use crate::schema::Promoted;
use crate::sink::{Opening, Target};
use crate::window::Window;
use crate::zoho::ZohoClient;

/// Prints one line per check; exits with the code of the first failure.
pub async fn check(args: CheckArgs, config: &crate::config::Config) -> Exit {
    let run_id = crate::run::new_run_id(Utc::now());
    let mut failed: Option<Exit> = None;
    let mut report = |ok: Line| match ok {
        Ok(line) => println!("ok    {line}"),
        Err((e, exit)) => {
            println!("FAIL  {e}");
            tracing::error!(event = "check_failed", "{e}");
            failed.get_or_insert(exit);
        }
    };
    let settings = match config.settings(Needs::ZohoCredentials) {
        Ok(settings) => settings,
        Err(e) => {
            report(Err(failure(e)));
            return Exit::Config;
        }
    };
    report(Ok("configuration variables are valid".into()));
    let timeout = args.request_timeout.to_std().unwrap_or(std::time::Duration::from_secs(30));
    let policy = crate::retry::RetryPolicy { max_attempts: 2, ..Default::default() };
    match ZohoClient::new(settings.zoho.clone().expect("credentials were required"), policy, timeout) {
        Ok(client) => zoho_calls(&client, &settings.promoted, &mut report).await,
        Err(e) => report(Err(failure(e))),
    }
    let opening = Opening { retry: policy, request_timeout: timeout, ..Opening::new(&settings, &run_id) };
    let sink_lines = async {
        let mut sink =
            Target::chosen(args.sink.as_ref(), &settings, false).map_err(RunError::Usage)?.open(opening).await?;
        let lines = sink.check().await?;
        Ok::<_, RunError>(lines.into_iter().map(|l| format!("{}: {l}", sink.describe())).collect::<Vec<_>>())
    };
    match sink_lines.await {
        Ok(lines) => lines.into_iter().for_each(|l| report(Ok(l))),
        Err(e) => report(Err(failure(e))),
    }
    if failed.is_none() {
        println!("all checks passed");
    }
    failed.unwrap_or(Exit::Ok)
}

/// One check's line, or what failed and the exit it means.
type Line = Result<String, (String, Exit)>;

fn failure(e: impl Into<RunError>) -> (String, Exit) {
    let e = e.into();
    (e.to_string(), e.exit())
}

/// A token, then one request of each kind a sync makes, reported with the scope the token needs for it.
async fn zoho_calls(client: &ZohoClient, promoted: &[Promoted], report: &mut impl FnMut(Line)) {
    match client.authenticate().await {
        Ok(api) => report(Ok(format!("Zoho minted an access token; API domain {api}"))),
        Err(e) => return report(Err(failure(e))),
    }
    let now = Utc::now().fixed_offset();
    let w = Window::new(crate::window::WindowField::ModifiedTime, now - chrono::Duration::minutes(1), now)
        .expect("a one-minute window");
    let scoped = |call: &str, scope: &str, r: Result<(), crate::zoho::ZohoError>| {
        r.map(|()| format!("{call} answers (scope {scope})"))
            .map_err(|e| (format!("{call} (needs the scope {scope}): {e}"), e.exit()))
    };
    let criteria = crate::zoho::criteria::closed_won_in(&w).to_string();
    let search = client.search_page(&criteria, crate::zoho::SearchOrder::Default, 1).await;
    report(scoped("the Deals search API", "ZohoSearch.securesearch.READ", search.map(|_| ())));
    let count = client.coql_count(&crate::zoho::criteria::coql_count_closed_won(&w)).await;
    report(scoped("COQL", "ZohoCRM.coql.READ", count.map(|_| ())));
    let fields = client.fields("Deals").await;
    report(scoped("the Deals fields metadata", "ZohoCRM.settings.fields.READ", fields.map(|_| ())));
    let deleted = client.deleted_page(&w.start_str(), 1).await;
    report(scoped("the deleted Deals", "ZohoCRM.modules.deals.READ", deleted.map(|_| ())));
    let some = client.coql("select id from Deals where id is not null limit 1").await;
    let id = some.ok().flatten().and_then(|p| p.records().next().and_then(crate::zoho::record_id));
    match id {
        Some(id) => {
            let read = client.records_by_id(&[id], &["Stage".to_string()]).await;
            report(scoped("reading Deals by id", "ZohoCRM.modules.deals.READ", read.map(|_| ())));
        }
        None => report(Ok("no deal to read by id (the org holds none, or COQL failed above)".into())),
    }
    if !promoted.is_empty() {
        report(check_promoted(client, promoted).await.map_err(failure));
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
    if !unknown.is_empty() {
        let problem =
            format!("{}, which Zoho's Deals metadata does not list (see `dealsync fields`)", unknown.join("; "));
        return Err(ConfigError::new("columns (config file)", problem).into());
    }
    Ok(format!("the {} promoted fields exist in Zoho's Deals metadata", promoted.len()))
}
