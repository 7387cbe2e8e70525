//! The BigQuery sink against the real bqemulator (started by scripts/test). Each test uses its own dataset.

use std::sync::Arc;

use chrono::Duration;
use dealsync::mapping::{Mapped, RunStamp};
use dealsync_sim::SimConfig;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::Client;
use rust_decimal::Decimal;

use crate::helpers::*;

pub const PROJECT: &str = "dealsync-test";

/// The emulator's address, for tests marked `#[ignore = "needs the BigQuery emulator"]`, which scripts/test runs
/// with the emulator started.
pub fn required_emulator() -> String {
    std::env::var("BIGQUERY_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .expect("BIGQUERY_EMULATOR_HOST is set (run scripts/test)")
}

#[derive(Clone)]
struct NoAuth;

#[async_trait::async_trait]
impl gcp_bigquery_client::auth::Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, gcp_bigquery_client::error::BQError> {
        Ok("test".into())
    }
}

/// A test's own dataset on the emulator, a client to look into it, and the harness dealsync talks to: the
/// emulator behind a proxy that answers as the real service may (`bq_harness`).
pub struct TestBq {
    pub dataset: String,
    client: Client,
    pub harness: crate::bq_harness::Harness,
}

impl TestBq {
    pub async fn new(host: &str, name: &str) -> TestBq {
        let client = ClientBuilder::new()
            .with_v2_base_url(format!("http://{host}/bigquery/v2"))
            .build_from_authenticator(Arc::new(NoAuth))
            .await
            .unwrap();
        let suffix = dealsync_sim::data::Rng::new(
            std::process::id() as u64 ^ chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64,
        )
        .next_u64()
            % 1_000_000;
        let harness = crate::bq_harness::start(host).await;
        TestBq { dataset: format!("{name}_{suffix}"), client, harness }
    }

    pub fn table_ref(&self, table: &str) -> String {
        format!("`{PROJECT}.{}.{table}`", self.dataset)
    }

    pub async fn query(&self, sql: &str) -> ResultSet {
        let mut req = QueryRequest::new(sql);
        req.format_options = Some(gcp_bigquery_client::model::data_format_options::DataFormatOptions {
            use_int64_timestamp: Some(true),
        });
        // The emulator may close a kept-alive connection just as the next query goes out on it (hyper's
        // IncompleteMessage). The tests' queries read, or delete a named row, so sending one again on a fresh
        // connection gives the same result even if the first copy got through.
        let mut attempt = 0;
        let resp = loop {
            match self.client.job().query(PROJECT, req.clone()).await {
                Err(gcp_bigquery_client::error::BQError::RequestError(e)) if e.is_request() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => break other.unwrap(),
            }
        };
        assert!(resp.errors.as_ref().is_none_or(|e| e.is_empty()), "{sql}: {:?}", resp.errors);
        ResultSet::new_from_query_response(resp)
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let mut rs = self.query(sql).await;
        let mut out = Vec::new();
        while rs.next_row() {
            out.push(rs.get_string(0).unwrap().unwrap_or_default());
        }
        out
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let mut rs = self.query(sql).await;
        assert!(rs.next_row());
        rs.get_i64(0).unwrap().unwrap()
    }

    pub async fn deal_ids(&self) -> Vec<String> {
        self.strings(&format!("SELECT deal_id FROM {} ORDER BY deal_id", self.table_ref("closed_won_deals"))).await
    }

    pub async fn table(&self, name: &str) -> Option<Table> {
        self.client.table().get(PROJECT, &self.dataset, name, None).await.ok()
    }

    pub async fn table_names(&self) -> Vec<String> {
        let list = self.client.table().list(PROJECT, &self.dataset, Default::default()).await.unwrap();
        list.tables.unwrap_or_default().into_iter().map(|t| t.table_reference.table_id).collect()
    }

    pub async fn create_dataset(&self) {
        self.client
            .dataset()
            .create(gcp_bigquery_client::model::dataset::Dataset::new(PROJECT, &self.dataset))
            .await
            .unwrap();
    }

    pub async fn create_table(&self, name: &str, fields: Vec<TableFieldSchema>) {
        self.client.table().create(Table::new(PROJECT, &self.dataset, name, TableSchema::new(fields))).await.unwrap();
    }

    /// A dealsync run pointed at this dataset.
    pub fn dealsync(&self, args: &[&str]) -> Dealsync {
        Dealsync::new(args)
            .env("BIGQUERY_EMULATOR_HOST", &self.harness.host)
            .env("BIGQUERY_PROJECT", PROJECT)
            .env("BIGQUERY_DATASET", &self.dataset)
    }

    /// The real sink, pointed at this dataset through the harness, for a run of `stamp`.
    pub async fn sink(&self, stamp: &RunStamp) -> dealsync::sink::bigquery::BigQuerySink {
        dealsync::sink::bigquery::BigQuerySink::connect(
            self.settings(),
            &stamp.run_id,
            Default::default(),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap()
    }

    pub fn settings(&self) -> dealsync::config::BigQuerySettings {
        dealsync::config::BigQuerySettings {
            project: PROJECT.into(),
            dataset: self.dataset.clone(),
            table: "closed_won_deals".into(),
            location: None,
            auth: dealsync::config::BigQueryAuth::Emulator {
                base_url: format!("http://{}/bigquery/v2", self.harness.host).parse().unwrap(),
            },
        }
    }
}

const OCTOBER: [&str; 5] = ["sync", "--from", "2026-10-01", "--to", "2026-11-01"];

/// Up to `n` of the simulator's readable closed-won deals of October, mapped as a run of `stamp` maps them.
fn october_rows(sim: &dealsync_sim::SimHandle, stamp: &RunStamp, n: usize) -> Vec<dealsync::schema::DealRow> {
    let mut rows = Vec::new();
    for d in sim.closed_won(&october()).iter().filter(|d| d.broken.is_none()).take(n) {
        let mut text = String::new();
        d.render(sim.config().tz, None, &mut text);
        if let Mapped::Row(r) = map_json(&text, stamp) {
            rows.push(*r);
        }
    }
    rows
}

fn october() -> dealsync::window::Window {
    window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn a_run_straight_against_the_emulator_which_names_upload_jobs_itself_waits_for_the_job_it_named() {
    // Without the harness: the emulator answers an upload with a job id of its own and knows no other (the
    // demo's and the benchmark's set-up). The job to wait for is the one the answer names.
    let host = required_emulator();
    let bq = TestBq::new(&host, "direct").await;
    let sim = simulator(sim_config(1500)).await;
    let out = Dealsync::new(&OCTOBER)
        .env("BIGQUERY_EMULATOR_HOST", &host)
        .env("BIGQUERY_PROJECT", PROJECT)
        .env("BIGQUERY_DATASET", &bq.dataset)
        .against(&sim)
        .run()
        .await;
    out.assert_code(0);
    assert_eq!(bq.deal_ids().await, expected_ids(&sim, &october()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn the_first_run_creates_dataset_and_tables_and_writes_exactly_the_closed_won_deals() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "first_run").await;
    let sim = simulator(sim_config(3000)).await;
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    let truth = expected_ids(&sim, &october());
    assert_eq!(bq.deal_ids().await, truth);
    assert_eq!(out.count("rows_inserted"), truth.len() as u64);

    let target = bq.table("closed_won_deals").await.expect("target exists");
    assert_eq!(target.time_partitioning.unwrap().field.as_deref(), Some("closing_date"));
    assert_eq!(target.clustering.unwrap().fields.unwrap(), vec!["deal_id".to_string()]);
    let fields = target.schema.fields().clone().unwrap();
    let mode = |n: &str| fields.iter().find(|f| f.name == n).unwrap().mode.clone().unwrap_or_default();
    assert_eq!(mode("deal_id"), "REQUIRED");
    assert_eq!(mode("tags"), "REPEATED");
    let names = bq.table_names().await;
    assert!(names.contains(&"_dealsync_runs".to_string()) && names.contains(&"_dealsync_quarantine".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("_dealsync_stg_")), "the staging table was dropped: {names:?}");
    assert_eq!(
        bq.count(&format!("SELECT COUNT(*) FROM {} WHERE status = 'success'", bq.table_ref("_dealsync_runs"))).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn with_every_documented_answer_at_once_a_backfill_deletions_and_verify_end_with_the_truth() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "documented").await;
    let sim = simulator(sim_config(5000)).await;
    let days = ["sync", "--from", "2026-10-04", "--to", "2026-10-30"];
    let w = window("2026-10-04T00:00:00Z", "2026-10-30T00:00:00Z");
    let first = bq.dealsync(&days).against(&sim).run().await;
    first.assert_code(0);
    let truth = expected_ids(&sim, &w);
    assert!(truth.len() > 1000, "a few thousand deals: {}", truth.len());
    assert_eq!(bq.deal_ids().await, truth);

    let gone: Vec<u64> =
        sim.closed_won(&w).iter().filter(|d| d.broken.is_none()).step_by(97).take(6).map(|d| d.id).collect();
    sim.mutate(|deals| {
        for d in deals.iter_mut().filter(|d| gone.contains(&d.id)) {
            d.deleted = true;
            d.deleted_at = Some(utc("2026-10-20T00:00:00Z").timestamp());
        }
    });
    let second = bq.dealsync(&days).against(&sim).run().await;
    second.assert_code(0);
    assert_eq!(second.count("rows_deleted"), 6, "exactly the deleted closed-won deals");
    let ids: Vec<String> = gone.iter().map(|id| format!("'{id}'")).collect();
    let marked = format!(
        "SELECT COUNT(*) FROM {} WHERE is_deleted AND deal_id IN ({})",
        bq.table_ref("closed_won_deals"),
        ids.join(", ")
    );
    assert_eq!(bq.count(&marked).await, 6);
    bq.dealsync(&["verify", "--from", "2026-10-04", "--to", "2026-10-30"]).against(&sim).run().await.assert_code(0);

    let served = bq.harness.served();
    assert_eq!(served.insert_all, 0, "no row passes through insertAll");
    assert_eq!(served.concurrent_updates, 2, "the MERGE and the soft delete each lost once, and ran again");
    assert!(served.running > 0 && served.incomplete_results > 0, "{served:?}");
    assert!(served.expirations_cleared >= 3, "the dataset's default expirations were removed: {served:?}");
    assert_eq!(served.not_found_without_location, 0, "every job was polled in its location");
    // The harness refuses a poll without the location, as the service does.
    let job = format!("http://{}/bigquery/v2/projects/{PROJECT}/jobs/anything", bq.harness.host);
    assert_eq!(reqwest::get(&job).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn the_same_window_again_changes_nothing() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "rerun").await;
    let sim = simulator(sim_config(2000)).await;
    bq.dealsync(&OCTOBER).against(&sim).run().await.assert_code(0);
    let snapshot_sql = format!(
        "SELECT CONCAT(deal_id, '|', CAST(amount AS STRING), '|', CAST(UNIX_MICROS(modified_time) AS STRING), '|', sync_run_id) FROM {} ORDER BY deal_id",
        bq.table_ref("closed_won_deals")
    );
    let before = bq.strings(&snapshot_sql).await;

    let again = bq.dealsync(&OCTOBER).against(&sim).run().await;
    again.assert_code(0);
    assert_eq!(again.event("merge")["affected"], 0, "the MERGE affects 0 rows");
    assert_eq!(again.count("rows_inserted") + again.count("rows_updated"), 0);
    assert_eq!(again.count("rows_unchanged"), before.len() as u64);
    assert_eq!(bq.strings(&snapshot_sql).await, before, "not even sync_run_id changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn newer_copies_replace_rows_and_older_ones_never_do() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "newer").await;
    let sim = simulator(sim_config(2000)).await;
    bq.dealsync(&OCTOBER).against(&sim).run().await.assert_code(0);

    let edited: Vec<u64> =
        sim.closed_won(&window("2026-10-05T00:00:00Z", "2026-10-25T00:00:00Z")).iter().take(5).map(|d| d.id).collect();
    sim.mutate(|deals| {
        for d in deals.iter_mut().filter(|d| edited.contains(&d.id)) {
            d.amount = Some(Decimal::new(77_777, 2));
            d.modified += 3600;
        }
    });
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(out.count("rows_updated"), 5);
    assert_eq!(out.count("rows_inserted"), 0);
    let amounts_sql = format!(
        "SELECT CAST(amount AS STRING) FROM {} WHERE deal_id IN ({}) ORDER BY deal_id",
        bq.table_ref("closed_won_deals"),
        edited.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",")
    );
    let amounts = bq.strings(&amounts_sql).await;
    assert!(amounts.iter().all(|a| a.parse::<Decimal>().unwrap() == Decimal::new(77_777, 2)), "{amounts:?}");

    // The CRM now hands out an older copy (a stale replica, a restored backup): it must not win.
    sim.mutate(|deals| {
        for d in deals.iter_mut().filter(|d| edited.contains(&d.id)) {
            d.amount = Some(Decimal::new(100, 2));
            d.modified -= 7200;
        }
    });
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(out.count("rows_updated"), 0);
    assert_eq!(bq.strings(&amounts_sql).await, amounts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn a_run_killed_before_its_load_finished_is_repaired_by_the_next_run() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "killed").await;
    let sim = simulator(sim_config(6000)).await;

    // A run that staged a batch of rows and died before its MERGE: the real sink, never committed.
    let stamp = stamp("20261001T000000Z_deadbeef");
    let mut killed = bq.sink(&stamp).await;
    killed.prepare().await.unwrap();
    killed.write_rows(october_rows(&sim, &stamp, 600)).await.unwrap();
    // The process dies with its rows in an unfinished upload: a load lands every row or none.
    let stg = format!("_dealsync_stg_{}", stamp.run_id.to_ascii_lowercase());
    drop(killed);
    assert!(bq.table_names().await.contains(&stg), "the dead run left its staging table");
    assert_eq!(bq.count(&format!("SELECT COUNT(*) FROM {}", bq.table_ref(&stg))).await, 0, "nothing was loaded");
    assert_eq!(bq.deal_ids().await, Vec::<String>::new(), "nothing reached the target");

    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(bq.deal_ids().await, expected_ids(&sim, &october()));
    let again = bq.dealsync(&OCTOBER).against(&sim).run().await;
    again.assert_code(0);
    assert_eq!(again.count("rows_inserted") + again.count("rows_updated"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn a_run_too_large_for_one_load_is_staged_in_parts_and_merged_once() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "parts").await;
    let sim = simulator(sim_config(3000)).await;
    let stamp = stamp("20261001T000000Z_0000part");
    let mut sink = bq.sink(&stamp).await;
    sink.part_bytes = 200_000;
    sink.prepare().await.unwrap();
    let rows = october_rows(&sim, &stamp, usize::MAX);
    let n = rows.len();
    for chunk in rows.chunks(100) {
        sink.write_rows(chunk.to_vec()).await.unwrap();
    }
    let stats = sink.finish(dealsync::sink::Ending::Complete).await.unwrap().stats;
    assert!(bq.harness.served().loads >= 5, "staged in parts: {:?}", bq.harness.served());
    assert_eq!(stats.inserted as usize, n);
    assert_eq!(bq.deal_ids().await.len(), n);
    assert!(!bq.table_names().await.iter().any(|t| t.starts_with("_dealsync_stg_")), "the staging table was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn numeric_amounts_round_trip_exactly() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "numeric").await;
    let sim = simulator(sim_config(4000)).await;
    bq.dealsync(&OCTOBER).against(&sim).run().await.assert_code(0);
    let mut rs = bq
        .query(&format!(
            "SELECT deal_id, CAST(amount AS STRING), CAST(exchange_rate AS STRING) FROM {}",
            bq.table_ref("closed_won_deals")
        ))
        .await;
    let truth: std::collections::HashMap<String, Option<Decimal>> =
        sim.closed_won(&october()).into_iter().map(|d| (d.id.to_string(), d.amount)).collect();
    let (mut n, mut huge, mut dime) = (0, 0, 0);
    while rs.next_row() {
        let id = rs.get_string(0).unwrap().unwrap();
        let amount = rs.get_string(1).unwrap().map(|a| a.parse::<Decimal>().unwrap());
        assert_eq!(amount, truth[&id], "deal {id}");
        huge += (amount == Some("12345678901.25".parse().unwrap())) as usize;
        dime += (amount == Some("0.10".parse().unwrap())) as usize;
        n += 1;
    }
    assert!(n > 1000 && huge > 0 && dime > 0, "{n} rows, {huge} huge, {dime} dimes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn the_run_ledger_in_bigquery_drives_the_next_window() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "ledger").await;
    let sim = simulator(SimConfig::demo(3000, 9)).await;
    let first = bq.dealsync(&["sync"]).against(&sim).run().await;
    first.assert_code(0);
    assert_eq!(first.event("window")["from_ledger"], false);
    let end1 = utc(first.summary()["window_end"].as_str().unwrap());

    let second = bq.dealsync(&["sync"]).against(&sim).run().await;
    second.assert_code(0);
    assert_eq!(second.event("window")["from_ledger"], true);
    assert_eq!(utc(second.summary()["window_start"].as_str().unwrap()), end1 - Duration::hours(1));
    let final_rows = format!("SELECT COUNT(*) FROM {} WHERE status != 'running'", bq.table_ref("_dealsync_runs"));
    assert_eq!(bq.count(&final_rows).await, 2, "one final row a run (beside its `running` row)");

    // `dealsync runs` reads the same ledger back as history.
    let runs = bq.dealsync(&["runs", "--format", "json", "--limit", "5"]).run().await;
    runs.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    let listed: Vec<&str> = doc["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    let (id1, id2) = (first.summary()["run_id"].clone(), second.summary()["run_id"].clone());
    assert_eq!(listed, [id2.as_str().unwrap(), id1.as_str().unwrap()], "newest first");
    assert_eq!(doc["runs"][0]["rows_written"].as_u64().unwrap(), second.count("rows_written"));
    assert_eq!(utc(doc["runs"][1]["window_end"].as_str().unwrap()), end1);
    assert_eq!(doc["last_good"]["run_id"], id2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn an_incompatible_table_stops_the_run_before_any_write() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "incompatible").await;
    bq.create_dataset().await;
    let mut fields = target_fields();
    fields[3] = TableFieldSchema::new("amount", FieldType::Float64);
    bq.create_table("closed_won_deals", fields).await;
    let sim = simulator(sim_config(500)).await;
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(78);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    assert!(err.contains("column amount is FLOAT64, dealsync writes NUMERIC"), "{err}");
    assert_eq!(sim.stats().search_requests, 0, "stopped before fetching");
    assert!(!bq.table_names().await.iter().any(|n| n.starts_with("_dealsync_stg_")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn a_missing_column_is_added_to_an_existing_table() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "evolve").await;
    bq.create_dataset().await;
    let fields: Vec<_> = target_fields().into_iter().filter(|f| f.name != "lead_source").collect();
    bq.create_table("closed_won_deals", fields).await;
    let sim = simulator(sim_config(800)).await;
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(out.event("columns_added")["columns"], "lead_source");
    let n = bq.count(&format!("SELECT COUNT(lead_source) FROM {}", bq.table_ref("closed_won_deals"))).await;
    assert_eq!(n as usize, expected_ids(&sim, &october()).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn quarantined_records_land_in_the_bigquery_quarantine_table() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "quarantine").await;
    let sim = simulator(SimConfig { broken: 4, ..sim_config(1500) }).await;
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(3);
    assert_eq!(bq.deal_ids().await, expected_ids(&sim, &october()));
    let reasons =
        bq.strings(&format!("SELECT reason FROM {} ORDER BY reason", bq.table_ref("_dealsync_quarantine"))).await;
    assert_eq!(reasons.len(), 4);
    assert!(reasons.iter().any(|r| r.starts_with("Closing_Date:")), "{reasons:?}");
    assert_eq!(
        bq.count(&format!("SELECT COUNT(*) FROM {} WHERE status = 'partial'", bq.table_ref("_dealsync_runs"))).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn check_verifies_zoho_and_bigquery_without_writing_anything() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "check").await;
    let sim = simulator(sim_config(100)).await;
    let out = bq.dealsync(&["check"]).against(&sim).run().await;
    out.assert_code(0);
    assert!(out.stdout.contains("ok    Zoho minted an access token"), "{}", out.stdout);
    assert!(out.stdout.contains("the Deals search API answers"));
    assert!(out.stdout.contains("does not exist yet; the first run creates it"));
    assert!(out.stdout.ends_with("all checks passed\n"));
    assert!(bq.table("closed_won_deals").await.is_none(), "check created nothing");
    assert_eq!(sim.stats().search_requests, 1);

    // After a sync the table exists and check reads its schema.
    bq.dealsync(&OCTOBER).against(&sim).run().await.assert_code(0);
    let out = bq.dealsync(&["check"]).against(&sim).run().await;
    out.assert_code(0);
    assert!(out.stdout.contains("has a compatible schema"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn check_reports_each_failure_and_exits_with_the_first_ones_code() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "check_fail").await;
    let sim = simulator(sim_config(100)).await;
    let out = bq.dealsync(&["check"]).against(&sim).env("ZOHO_REFRESH_TOKEN", "1000.revoked").run().await;
    out.assert_code(78);
    assert!(out.stdout.contains("FAIL  ZOHO_REFRESH_TOKEN was rejected"), "{}", out.stdout);
    assert!(out.stdout.contains("ok    bigquery:"), "the warehouse is still checked: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn random_faults_and_a_sigkill_into_bigquery_end_with_exactly_the_truth() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "faults").await;
    let plan = dealsync_sim::faults::FaultPlan {
        rate: 0.2,
        seed: 99,
        slow: std::time::Duration::from_millis(1200),
        ..Default::default()
    };
    let sim =
        simulator(SimConfig { latency: std::time::Duration::from_millis(100), faults: plan, ..sim_config(6000) }).await;
    let args = [
        "sync",
        "--from",
        "2026-10-01",
        "--to",
        "2026-11-01",
        "--request-timeout",
        "1s",
        "--retry-max-delay",
        "200ms",
        "--max-attempts",
        "12",
    ];
    let running = bq.dealsync(&args).against(&sim).spawn();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    running.signal("KILL");
    let _ = running.wait().await;
    let term = bq.dealsync(&args).against(&sim).spawn();
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    term.signal("TERM");
    let t = term.wait().await;
    assert!(t.code == 75 || t.code == 0, "{}", t.stderr);
    if t.code == 75 {
        assert!(
            !bq.table_names()
                .await
                .iter()
                .any(|n| n.contains(&t.summary()["run_id"].as_str().unwrap().to_ascii_lowercase())),
            "an interrupted run drops its staging table"
        );
    }
    let out = bq.dealsync(&args).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(bq.deal_ids().await, expected_ids(&sim, &october()));
    assert_eq!(
        bq.count(&format!("SELECT COUNT(*) - COUNT(DISTINCT deal_id) FROM {}", bq.table_ref("closed_won_deals"))).await,
        0
    );
    assert!(sim.stats().faults_injected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn reconciliation_in_bigquery_names_a_row_deleted_behind_dealsyncs_back() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "reconcile").await;
    let sim = simulator(sim_config(2000)).await;
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(out.event("reconciliation")["outcome"], "match");
    let victim = bq.deal_ids().await[5].clone();
    bq.query(&format!("DELETE FROM {} WHERE deal_id = '{victim}'", bq.table_ref("closed_won_deals"))).await;
    let verify = bq.dealsync(&["verify", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim).run().await;
    verify.assert_code(3);
    assert_eq!(verify.event("reconciliation")["missing"], serde_json::json!([victim]), "every page of ids was read");
    let served = bq.harness.served();
    assert!(served.next_pages >= 5, "the ids came 100 a page: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn four_sharded_tasks_merge_exactly_the_range_into_bigquery() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "sharded").await;
    let sim = simulator(sim_config(4000)).await;
    // The first task creates the dataset and tables; the others find them.
    let mut runs = Vec::new();
    for index in 0..4 {
        runs.push(
            bq.dealsync(&OCTOBER)
                .against(&sim)
                .env("JOB_COMPLETION_INDEX", &index.to_string())
                .env("DEALSYNC_TASK_COUNT", "4")
                .spawn(),
        );
    }
    for run in runs {
        run.wait().await.assert_code(0);
    }
    assert_eq!(bq.deal_ids().await, expected_ids(&sim, &october()));
    assert!(
        !bq.table_names().await.iter().any(|n| n.starts_with("_dealsync_stg_")),
        "every task dropped its staging table"
    );
    assert_eq!(
        bq.count(&format!(
            "SELECT COUNT(*) FROM {} WHERE kind = 'backfill' AND status = 'success'",
            bq.table_ref("_dealsync_runs")
        ))
        .await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn deleted_and_reopened_deals_are_marked_in_bigquery() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "changes").await;
    let sim = simulator(sim_config(2000)).await;
    bq.dealsync(&OCTOBER).against(&sim).run().await.assert_code(0);
    let won = sim.closed_won(&october());
    let (gone, reopened) = (won[3].id, won[4].id);
    sim.mutate(|deals| {
        for d in deals.iter_mut() {
            if d.id == gone {
                d.deleted = true;
                d.deleted_at = Some(utc("2026-10-21T00:00:00Z").timestamp());
            } else if d.id == reopened {
                d.stage = "Negotiation/Review";
                d.modified = utc("2026-10-31T12:00:00Z").timestamp();
            }
        }
    });
    let out = bq.dealsync(&OCTOBER).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!((out.count("rows_deleted"), out.count("rows_reopened")), (1, 1));
    let t = bq.table_ref("closed_won_deals");
    assert_eq!(
        bq.count(&format!(
            "SELECT COUNT(*) FROM {t} WHERE deal_id = '{gone}' AND is_deleted AND deleted_time IS NOT NULL"
        ))
        .await,
        1
    );
    assert_eq!(bq.count(&format!("SELECT COUNT(*) FROM {t} WHERE deal_id = '{reopened}' AND NOT is_closed_won AND stage = 'Negotiation/Review'")).await, 1);
    assert_eq!(out.event("reconciliation")["outcome"], "match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the BigQuery emulator"]
async fn a_promoted_field_becomes_a_typed_bigquery_column_without_touching_existing_rows() {
    let host = required_emulator();
    let bq = TestBq::new(&host, "promoted").await;
    let sim = simulator(sim_config(1200)).await;
    let first = bq.dealsync(&["sync", "--from", "2026-10-01", "--to", "2026-10-16"]).against(&sim).run().await;
    first.assert_code(0);
    let first_run = first.summary()["run_id"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let config =
        format!("{}account_json = {{ field = \"Account_Name\", type = \"json\" }}\n", crate::custom_fields::PROMOTED);
    std::fs::write(dir.path().join("config/dealsync.toml"), config).unwrap();
    let second =
        bq.dealsync(&["sync", "--from", "2026-10-16", "--to", "2026-11-01"]).against(&sim).reuse(dir).run().await;
    second.assert_code(0);

    let t = bq.table_ref("closed_won_deals");
    // Typed columns: date arithmetic, integer arithmetic, booleans and JSON functions work on them (the
    // emulator's tables.get and INFORMATION_SCHEMA do not show columns added by DDL).
    let late = expected_ids(&sim, &window("2026-10-16T00:00:00Z", "2026-11-01T00:00:00Z"));
    let typed = bq
        .count(&format!(
            "SELECT COUNT(*) FROM {t} WHERE DATE_DIFF(renewal_date, closing_date, DAY) IN (365, 366) AND seats + 1 BETWEEN 2 AND 501 \
             AND signed_contract AND JSON_VALUE(account_json, '$.id') = account_id AND LENGTH(region) = 4"
        ))
        .await;
    assert_eq!(typed as usize, late.len());
    let early = expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-10-16T00:00:00Z"));
    let untouched = bq
        .strings(&format!("SELECT deal_id FROM {t} WHERE region IS NULL AND seats IS NULL AND sync_run_id = '{first_run}' ORDER BY deal_id"))
        .await;
    assert_eq!(untouched, early, "rows of the first run keep their values and run id");

    let deals: std::collections::HashMap<String, dealsync_sim::data::SimDeal> =
        sim.closed_won(&october()).into_iter().map(|d| (d.id.to_string(), d)).collect();
    let mut rs = bq
        .query(&format!(
            "SELECT deal_id, region, seats, CAST(contract_value AS STRING), partner_tier, CAST(renewal_date AS STRING), signed_contract, \
             JSON_VALUE(account_json, '$.id') = account_id FROM {t} WHERE region IS NOT NULL"
        ))
        .await;
    let mut seen = 0;
    while rs.next_row() {
        let id = rs.get_string(0).unwrap().unwrap();
        let got = (
            rs.get_string(1).unwrap().unwrap(),
            rs.get_i64(2).unwrap().unwrap(),
            rs.get_string(3).unwrap().map(|s| s.parse::<Decimal>().unwrap().normalize().to_string()),
            rs.get_string(4).unwrap(),
            rs.get_string(5).unwrap().unwrap(),
            rs.get_bool(6).unwrap().unwrap(),
        );
        assert_eq!(got, crate::custom_fields::expected_promoted(&deals[&id]), "deal {id}");
        assert_eq!(rs.get_bool(7).unwrap(), Some(true), "deal {id}: the JSON column holds the lookup");
        seen += 1;
    }
    assert_eq!(seen, deals.len() - early.len());

    // A backfill with --rewrite fills the older rows too.
    let dir = second.dir;
    let rewrite = bq
        .dealsync(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--rewrite"])
        .against(&sim)
        .reuse(dir)
        .run()
        .await;
    rewrite.assert_code(0);
    assert_eq!(rewrite.count("rows_updated") as usize, deals.len());
    assert_eq!(bq.count(&format!("SELECT COUNT(*) FROM {t} WHERE region IS NULL")).await, 0);
}

/// The target's schema as the API describes it.
fn target_fields() -> Vec<TableFieldSchema> {
    serde_json::from_value(serde_json::to_value(dealsync::schema::columns(&[])).unwrap()).unwrap()
}
