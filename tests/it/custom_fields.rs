//! Custom fields: `dealsync fields` and promoting fields to typed columns through the config file, in SQLite
//! here and in BigQuery in `bigquery.rs`.

use chrono::Duration;
use dealsync_sim::data::SimDeal;
use dealsync_sim::SimConfig;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::helpers::*;

pub const PROMOTED: &str = r#"
[columns]
region = { field = "Region", type = "text" }
seats = { field = "Seats", type = "integer" }
contract_value = { field = "Contract_Value", type = "decimal" }
partner_tier = { field = "Partner_Tier", type = "text" }
renewal_date = { field = "Renewal_Date", type = "date" }
signed_contract = { field = "Signed_Contract", type = "boolean" }
account_name_again = { field = "Account_Name", type = "lookup_name" }
"#;

/// The promoted values the simulator renders for a deal, as the SQLite columns hold them.
pub fn expected_promoted(d: &SimDeal) -> (String, i64, Option<String>, Option<String>, String, bool) {
    (
        ["EMEA", "APAC", "AMER"][(d.id % 3) as usize].to_string(),
        (d.id % 500 + 1) as i64,
        d.amount.map(|a| (a * Decimal::new(11, 1)).round_dp(2).normalize().to_string()),
        d.id.is_multiple_of(4).then(|| "Gold".to_string()),
        (d.closing + Duration::days(365)).format("%Y-%m-%d").to_string(),
        d.is_closed_won(),
    )
}

fn write_config(dir: &std::path::Path, text: &str) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/dealsync.toml"), text).unwrap();
}

type PromotedRow = (String, i64, Option<String>, Option<String>, String, bool);

fn promoted_rows(db: &std::path::Path) -> Vec<(String, Option<PromotedRow>, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c
        .prepare("SELECT deal_id, region, seats, contract_value, partner_tier, renewal_date, signed_contract, sync_run_id FROM closed_won_deals ORDER BY deal_id")
        .unwrap();
    let rows = s
        .query_map([], |r| {
            let region: Option<String> = r.get(1)?;
            let promoted = match region {
                None => None,
                Some(region) => Some((region, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get::<_, i64>(6)? == 1)),
            };
            Ok((r.get(0)?, promoted, r.get(7)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_custom_field_appears_as_a_typed_column_on_the_next_run_without_touching_existing_rows() {
    let sim = simulator(sim_config(1500)).await;
    let first = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-10-16"]).against(&sim).run().await;
    first.assert_code(0);
    let first_run = first.summary()["run_id"].as_str().unwrap().to_string();
    let before = promoted_rows_or_columns_missing(&first.db());
    assert!(before, "no promoted columns before the config names them");

    write_config(first.dir.path(), PROMOTED);
    let second = Dealsync::new(&["sync", "--from", "2026-10-16", "--to", "2026-11-01"])
        .against(&sim)
        .reuse(first.dir)
        .run()
        .await;
    second.assert_code(0);
    assert!(second.events().iter().any(|e| e["event"] == "columns_added"), "{}", second.stderr);

    let deals: std::collections::HashMap<String, SimDeal> = sim
        .closed_won(&window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"))
        .into_iter()
        .map(|d| (d.id.to_string(), d))
        .collect();
    let late = expected_ids(&sim, &window("2026-10-16T00:00:00Z", "2026-11-01T00:00:00Z"));
    let rows = promoted_rows(&second.db());
    assert_eq!(rows.len(), deals.len());
    let (mut filled, mut untouched) = (0, 0);
    for (id, promoted, run) in &rows {
        if late.contains(id) {
            assert_eq!(promoted.as_ref(), Some(&expected_promoted(&deals[id])), "deal {id}");
            filled += 1;
        } else {
            assert_eq!((promoted, run), (&None, &first_run), "deal {id} from the first run is left as it was");
            untouched += 1;
        }
    }
    assert!(filled > 100 && untouched > 100, "{filled} {untouched}");
    // A lookup promoted a second time, under another name, holds the name.
    assert_eq!(
        query_i64(&second.db(), "SELECT count(*) FROM closed_won_deals WHERE account_name_again IS NOT NULL AND account_name_again <> account_name"),
        0
    );

    // A backfill with --rewrite fills the older rows from Zoho's copies, changing nothing else.
    let rewrite = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--rewrite"])
        .against(&sim)
        .reuse(second.dir)
        .run()
        .await;
    rewrite.assert_code(0);
    assert_eq!(rewrite.count("rows_updated") as usize, deals.len());
    for (id, promoted, _) in promoted_rows(&rewrite.db()) {
        assert_eq!(promoted, Some(expected_promoted(&deals[&id])), "deal {id}");
    }
    let again = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"])
        .against(&sim)
        .reuse(rewrite.dir)
        .run()
        .await;
    assert_eq!(
        (again.count("rows_updated"), again.count("rows_inserted")),
        (0, 0),
        "without --rewrite equal copies stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_export_carries_the_promoted_columns_too() {
    let sim = simulator(sim_config(300)).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), PROMOTED);
    let run = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--sink", "ndjson:out.ndjson"])
        .against(&sim)
        .reuse(dir)
        .run()
        .await;
    run.assert_code(0);
    let deals: std::collections::HashMap<String, SimDeal> = sim
        .closed_won(&window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"))
        .into_iter()
        .map(|d| (d.id.to_string(), d))
        .collect();
    let text = std::fs::read_to_string(run.dir.path().join("out.ndjson")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), deals.len());
    for line in &lines {
        let d = &deals[line["deal_id"].as_str().unwrap()];
        let (region, seats, _, tier, renewal, signed) = expected_promoted(d);
        assert_eq!(line["region"], region.as_str(), "{line}");
        assert_eq!(line["seats"], seats, "{line}");
        assert_eq!(line["partner_tier"].as_str(), tier.as_deref(), "{line}");
        assert_eq!(line["renewal_date"], renewal.as_str(), "{line}");
        assert_eq!(line["signed_contract"], signed, "{line}");
        assert_eq!(line["account_name_again"], line["account_name"], "{line}");
    }
}

/// True when the table exists without any promoted column.
fn promoted_rows_or_columns_missing(db: &std::path::Path) -> bool {
    let c = rusqlite::Connection::open(db).unwrap();
    let cols: Vec<String> = c
        .prepare("PRAGMA table_info(closed_won_deals)")
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    !cols.is_empty() && !cols.iter().any(|c| c == "region" || c == "seats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_fit_its_promoted_type_quarantines_the_deal_naming_the_field() {
    let sim = simulator(sim_config(600)).await;
    let d = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[columns]\npartner_gold = { field = \"Partner_Tier\", type = \"boolean\" }\n");
    let out = d.reuse(dir).run().await;
    out.assert_code(3);
    let gold: Vec<String> = sim
        .closed_won(&window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"))
        .into_iter()
        .filter(|d| d.id % 4 == 0 && d.broken.is_none())
        .map(|d| d.id.to_string())
        .collect();
    assert!(!gold.is_empty());
    assert_eq!(out.count("quarantined") as usize, gold.len());
    let c = rusqlite::Connection::open(out.db()).unwrap();
    let reasons: Vec<(String, String)> = c
        .prepare("SELECT deal_id, reason FROM _dealsync_quarantine ORDER BY deal_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut gold_sorted = gold.clone();
    gold_sorted.sort();
    assert_eq!(reasons.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), gold_sorted);
    assert!(reasons.iter().all(|(_, r)| r == "Partner_Tier: expected true or false, got \"Gold\""), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_fields_are_read_through_coql_too() {
    let sim = simulator(SimConfig {
        deals: 6000,
        span: Duration::seconds(1),
        anchor: utc("2026-10-15T12:00:01Z"),
        ..sim_config(0)
    })
    .await;
    let w = window("2026-10-15T12:00:00Z", "2026-10-15T12:00:01Z");
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), PROMOTED);
    let out = Dealsync::new(&["sync", "--from", "2026-10-15T12:00:00Z", "--to", "2026-10-15T12:00:01Z"])
        .against(&sim)
        .reuse(dir)
        .run()
        .await;
    out.assert_code(0);
    assert!(out.count("coql_pages") > 0, "{}", out.summary());
    let deals: std::collections::HashMap<String, SimDeal> =
        sim.closed_won(&w).into_iter().map(|d| (d.id.to_string(), d)).collect();
    let rows = promoted_rows(&out.db());
    assert_eq!(rows.len(), deals.len());
    for (id, promoted, _) in rows {
        assert_eq!(promoted, Some(expected_promoted(&deals[&id])), "deal {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealsync_fields_lists_every_field_with_the_column_type_it_would_get() {
    let text = Dealsync::new(&["fields", "--demo"]).run().await;
    text.assert_code(0);
    let line = |name: &str| {
        text.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}:\n{}", text.stdout))
            .to_string()
    };
    let words = |l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert!(text.stdout.starts_with("api name"), "{}", text.stdout);
    assert!(
        line("Amount").contains("currency") && line("Amount").contains("amount") && line("Amount").contains("NUMERIC")
    );
    assert!(
        words(line("Seats")).ends_with(&[
            "yes".into(),
            "raw".into(),
            "only".into(),
            "integer".into(),
            "INT64".into(),
            "INTEGER".into()
        ]),
        "{}",
        line("Seats")
    );

    // Partner_Tier's metadata has no json_type and no length: still listed, typed from data_type.
    let json = Dealsync::new(&["fields", "--demo", "--format", "json"]).run().await;
    json.assert_code(0);
    let rows: Vec<Value> = serde_json::from_str(&json.stdout).unwrap();
    let tier = rows.iter().find(|r| r["api_name"] == "Partner_Tier").unwrap();
    assert_eq!(
        (tier["json_type"].clone(), tier["type"].clone(), tier["custom"].clone()),
        (Value::Null, "text".into(), true.into())
    );
    assert_eq!(
        rows.iter().find(|r| r["api_name"] == "Owner").unwrap()["columns"],
        serde_json::json!(["owner_id", "owner_name", "owner_email"])
    );

    // The toml block is a valid [columns] table of the custom fields, with a config it reports them promoted.
    let toml_out = Dealsync::new(&["fields", "--demo", "--custom", "--format", "toml"]).run().await;
    toml_out.assert_code(0);
    let custom: Vec<&Value> = rows.iter().filter(|r| r["custom"] == true).collect();
    let parsed: toml::Table = toml::from_str(&toml_out.stdout).unwrap();
    assert_eq!(parsed["columns"].as_table().unwrap().len(), custom.len());
    assert_eq!(parsed["columns"]["contract_value"]["type"].as_str(), Some("decimal"));

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &toml_out.stdout);
    let promoted = Dealsync::new(&["fields", "--demo", "--custom", "--format", "json"]).reuse(dir).run().await;
    promoted.assert_code(0);
    let rows: Vec<Value> = serde_json::from_str(&promoted.stdout).unwrap();
    assert!(rows.iter().all(|r| r["stored"] == "promoted"), "{}", promoted.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_without_the_metadata_scope_names_the_scope_and_is_not_retried() {
    let sim =
        simulator(SimConfig { missing_scopes: vec!["ZohoCRM.settings.fields.READ".into()], ..sim_config(10) }).await;
    let out = Dealsync::new(&["fields"]).against(&sim).run().await;
    out.assert_code(78);
    assert!(out.stderr.contains("ZohoCRM.settings.fields.READ"), "{}", out.stderr);
    assert_eq!(sim.stats().api_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_promoted_column_exits_78_naming_the_entry() {
    for (config, culprit) in [
        ("[columns]\nregion = { field = \"Region\", type = \"string\" }\n", "columns.region.type"),
        ("[columns]\namount = { field = \"Amount\", type = \"decimal\" }\n", "columns.amount"),
        ("[columns]\nregion = { field = \"Region\", kind = \"text\" }\n", "kind"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), config);
        let out = Dealsync::new(&["sync", "--demo", "--demo-deals", "50"]).reuse(dir).run().await;
        out.assert_code(78);
        assert!(out.stderr.contains(culprit), "{culprit}: {}", out.stderr);
        assert!(!out.db().exists() && !out.demo_db().exists(), "nothing written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_confirms_promoted_fields_exist_in_zoho_and_names_the_ones_that_do_not() {
    let sim = simulator(sim_config(10)).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), PROMOTED);
    let ok = Dealsync::new(&["check", "--sink", "sqlite:deals.db"]).against(&sim).reuse(dir).run().await;
    ok.assert_code(0);
    assert!(ok.stdout.contains("ok    the 7 promoted fields exist in Zoho's Deals metadata"), "{}", ok.stdout);

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[columns]\nregion = { field = \"Region\", type = \"text\" }\nregoin = { field = \"Regoin\", type = \"text\" }\n");
    let bad = Dealsync::new(&["check", "--sink", "sqlite:deals.db"]).against(&sim).reuse(dir).run().await;
    bad.assert_code(78);
    assert!(
        bad.stdout.contains(
            "FAIL  columns (config file): columns.regoin promotes Regoin, which Zoho's Deals metadata does not list"
        ),
        "{}",
        bad.stdout
    );
    assert!(bad.stdout.contains("ok    sqlite:deals.db"), "the sink is still checked: {}", bad.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_column_named_like_a_keyword_is_quoted_and_written() {
    let sim = simulator(sim_config(600)).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "[columns]\norder = { field = \"Region\", type = \"text\" }\n");
    let out =
        Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim).reuse(dir).run().await;
    out.assert_code(0);
    assert!(query_i64(&out.db(), "SELECT count(*) FROM closed_won_deals WHERE \"order\" IS NOT NULL") > 0);
    let again = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--rewrite"])
        .against(&sim)
        .reuse(out.dir)
        .run()
        .await;
    again.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_promoted_columns_too() {
    let sim = simulator(sim_config(300)).await;
    let d = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--dry-run"]).against(&sim);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), PROMOTED);
    let out = d.reuse(dir).run().await;
    out.assert_code(0);
    assert!(out.stdout.lines().count() > 0, "{}", out.stderr);
    for text in out.stdout.lines() {
        let line: Value = serde_json::from_str(text).unwrap();
        assert!(line.get("region").is_some_and(|r| r.is_string()), "{text}");
        assert!(line.get("seats").is_some_and(|s| s.is_i64()), "{text}");
        assert!(text.find("\"region\":") < text.find("\"raw\":"), "raw stays last: {text}");
    }
}
