//! Fault injection: every fault Zoho really produces, alone and at random, interruptions at random points,
//! and arbitrary input to the mapper. The warehouse must end up with exactly the truth every time.

use std::time::Duration;

use dealsync::mapping::Mapped;
use dealsync_sim::data::Rng;
use dealsync_sim::faults::FaultPlan;
use dealsync_sim::SimConfig;
use proptest::prelude::*;
use serde_json::Value;

use crate::helpers::*;

const OCTOBER: [&str; 5] = ["sync", "--from", "2026-10-01", "--to", "2026-11-01"];
/// Short timeouts and waits, so that a test with faults takes seconds.
const FAST: [&str; 8] =
    ["--request-timeout", "1s", "--retry-max-delay", "200ms", "--max-attempts", "12", "--retry-deadline", "30s"];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    OCTOBER.iter().chain(FAST.iter()).chain(extra.iter()).copied().collect()
}

fn october() -> dealsync::window::Window {
    window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")
}

fn assert_no_duplicates(db: &std::path::Path) {
    assert_eq!(
        query_i64(db, "SELECT count(*) FROM closed_won_deals"),
        query_i64(db, "SELECT count(DISTINCT deal_id) FROM closed_won_deals")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_alone_is_survived_with_exactly_the_truth() {
    for spec in [
        "429@2",
        "500@2",
        "reset@2",
        "slow@2:4000",
        "expire@2",
        "badjson@2",
        "trunc@2",
        "429@1,500@2,reset@3,trunc@4,badjson@5",
    ] {
        let sim = simulator(SimConfig { faults: FaultPlan::parse(spec).unwrap(), ..sim_config(3000) }).await;
        // Retries are counted exactly, so the timeout is long enough that a loaded machine adds none of its own;
        // only the stalled answer (4 s) outlasts it.
        let timeout = ["--request-timeout", "2s"];
        let fast = FAST.iter().skip(2).chain(&timeout);
        let out = Dealsync::new(&OCTOBER.iter().chain(fast).copied().collect::<Vec<_>>()).against(&sim).run().await;
        out.assert_code(0);
        assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &october()), "{spec}");
        let injected = sim.stats().faults_injected;
        assert_eq!(injected as usize, spec.split(',').count(), "{spec}: every planned fault was injected");
        if spec == "expire@2" {
            assert_eq!(out.count("token_mints"), 2, "an expired token is re-minted once");
            assert_eq!(out.count("retries"), 0);
        } else {
            assert_eq!(out.count("retries"), injected, "{spec}: one retry per fault");
            let warns =
                out.events().into_iter().filter(|e| e["event"] == "retry" && e["severity"] == "WARNING").count();
            assert_eq!(warns as u64, injected, "{spec}: one warn event per retry");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_random_faults_at_20_percent_over_10000_deals_lose_and_duplicate_nothing() {
    let mut injected = 0;
    for seed in [1, 2, 3] {
        let plan = FaultPlan { rate: 0.2, seed, slow: Duration::from_millis(1200), ..FaultPlan::default() };
        let sim = simulator(SimConfig {
            deals: 10_000,
            span: chrono::Duration::days(10),
            anchor: utc("2026-10-20T00:00:00Z"),
            faults: plan,
            ..sim_config(0)
        })
        .await;
        let out = Dealsync::new(&args(&[])).against(&sim).run().await;
        out.assert_code(0);
        let truth = expected_ids(&sim, &october());
        assert!(truth.len() > 2500);
        assert_eq!(warehouse_ids(&out.db()), truth, "seed {seed}");
        assert_no_duplicates(&out.db());
        let stats = sim.stats();
        assert!(stats.faults_injected >= 3, "seed {seed}: {stats:?}");
        injected += stats.faults_injected;
        eprintln!(
            "seed {seed}: {} requests, faults {:?}, {} rows",
            stats.api_requests,
            stats.faults_by_kind,
            truth.len()
        );
    }
    assert!(injected >= 15, "{injected} faults in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_expire_mid_run_are_reminted() {
    // Tokens live one second; each request takes 300 ms, one at a time (the run's 11 requests take over 3 s
    // whatever the machine's speed): several tokens expire during the run.
    let sim = simulator(SimConfig {
        token_ttl: Duration::from_secs(1),
        latency: Duration::from_millis(300),
        ..sim_config(3000)
    })
    .await;
    let out = Dealsync::new(&args(&[])).against(&sim).env("ZOHO_MAX_CONCURRENCY", "1").run().await;
    out.assert_code(0);
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &october()));
    let mints = out.count("token_mints");
    assert!(mints >= 2, "{mints} mints");
    assert!(mints <= out.count("requests"), "never more mints than requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_remint_waits_instead_of_hammering() {
    let sim = simulator(SimConfig {
        mint_limit: 1,
        mint_window: Duration::from_secs(2),
        faults: FaultPlan::parse("expire@2").unwrap(),
        ..sim_config(3000)
    })
    .await;
    let out = Dealsync::new(&args(&[])).against(&sim).run().await;
    out.assert_code(0);
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &october()));
    let waits = out.events().into_iter().filter(|e| e["event"] == "token_throttled").count();
    assert!(waits >= 1, "it said it was waiting");
    assert!(sim.stats().token_requests <= 2 + waits as u64, "one mint attempt per wait, no hammering");
    // Minted tokens and refused attempts are counted apart, and together they are every mint request sent.
    assert_eq!(out.count("token_mints"), 2, "the first token and the one after the expiry");
    assert_eq!(out.count("token_mint_failures"), waits as u64);
    assert_eq!(out.count("token_mints") + out.count("token_mint_failures"), sim.stats().token_requests);
}

/// A run into SQLite interrupted after `delay_ms`, then a clean re-run: the table must hold exactly the truth.
/// Returns whether the signal arrived before the run finished.
async fn interrupt_then_rerun(signal: &str, delay_ms: u64) -> bool {
    let sim = simulator(SimConfig { latency: Duration::from_millis(150), ..sim_config(6000) }).await;
    let running = Dealsync::new(&args(&[])).against(&sim).spawn();
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    running.signal(signal);
    let first = running.wait().await;
    let db = first.db();
    let interrupted = first.code != 0;
    match signal {
        _ if first.code == 0 => {} // finished before the signal
        "KILL" => assert_eq!(first.code, -1, "killed by the signal"),
        _ => {
            first.assert_code(75);
            assert_eq!(first.summary()["outcome"], "interrupted");
            assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_runs WHERE status = 'interrupted'"), 1);
            // What it says it kept is what the warehouse holds.
            let err = first.summary()["error"].as_str().unwrap().to_string();
            assert!(err.contains("the rows written so far are committed"), "{err}");
            assert_eq!(first.count("rows_inserted") as i64, query_i64(&db, "SELECT count(*) FROM closed_won_deals"));
        }
    }
    let second = Dealsync::new(&args(&[])).against(&sim).reuse(first.dir).run().await;
    second.assert_code(0);
    assert_eq!(warehouse_ids(&db), expected_ids(&sim, &october()), "{signal} after {delay_ms} ms");
    assert_no_duplicates(&db);
    interrupted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_random_points_then_a_rerun_ends_with_the_truth() {
    let mut rng = Rng::new(2026);
    let mut interrupted = 0;
    for _ in 0..3 {
        interrupted += interrupt_then_rerun("TERM", 150 + rng.below(900)).await as usize;
    }
    assert!(interrupted >= 2, "the signals landed mid-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_a_rerun_ends_with_the_truth() {
    let mut rng = Rng::new(7);
    let mut interrupted = 0;
    for _ in 0..3 {
        interrupted += interrupt_then_rerun("KILL", 100 + rng.below(900)).await as usize;
    }
    assert!(interrupted >= 2, "the signals landed mid-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_deadline_stops_the_run_with_75_and_says_truly_what_it_kept() {
    let sim = simulator(SimConfig { latency: Duration::from_millis(200), ..sim_config(6000) }).await;
    let out = Dealsync::new(&args(&["--deadline", "1s"])).against(&sim).run().await;
    out.assert_code(75);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    assert!(err.contains("run deadline") && err.contains("the rows written so far are committed"), "{err}");
    let held = query_i64(&out.db(), "SELECT count(*) FROM closed_won_deals");
    assert_eq!(out.count("rows_inserted") as i64, held, "the summary counts the rows the warehouse holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_deal_twice_in_a_run_keeps_one_row_in_every_sink() {
    let deal =
        |id: &str, t: &str| format!(r#"{{"id":"{id}","Stage":"Closed Won","Amount":"1.5","Modified_Time":"{t}"}}"#);
    // A server that repeats deals: 2 twice as it was, 1 again as a newer copy.
    let deals = [
        deal("1", "2026-10-01T10:00:00Z"),
        deal("2", "2026-10-01T10:00:00Z"),
        deal("2", "2026-10-01T10:00:00Z"),
        deal("3", "2026-10-01T11:00:00Z"),
        deal("1", "2026-10-01T12:00:00Z"),
    ];
    let server = one_page_zoho(&deals, 3, 304).await;
    for sink in ["sqlite:deals.db", "ndjson:deals.ndjson"] {
        let out = sync_one_day(&server, sink).run().await;
        out.assert_code(0);
        assert_eq!(out.count("rows_unchanged"), 1, "the copy of 2 as it was: {sink}");
        if sink.starts_with("sqlite") {
            assert_eq!((out.count("rows_inserted"), out.count("rows_updated")), (3, 1), "{sink}");
            let db = out.dir.path().join("deals.db");
            assert_eq!(warehouse_ids(&db), vec!["1", "2", "3"]);
            assert_eq!(query_i64(&db, "SELECT count(*) FROM closed_won_deals WHERE deal_id = '1' AND modified_time = '2026-10-01T12:00:00Z'"), 1);
        } else {
            let text = std::fs::read_to_string(out.dir.path().join("deals.ndjson")).unwrap();
            // The newer copy of deal 1 is appended; readers keep the newest line per deal.
            assert_eq!(text.lines().count(), 4);
            assert_eq!(out.count("rows_inserted"), 4, "an export counts the lines it wrote");
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{1,40}(\\.[0-9]{0,20})?".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2}))?".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("id".to_string()), Just("name".to_string()), "[a-z]{1,6}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: &[&str] = &[
    "id",
    "Deal_Name",
    "Stage",
    "Amount",
    "Expected_Revenue",
    "Exchange_Rate",
    "Currency",
    "Probability",
    "Closing_Date",
    "Account_Name",
    "Contact_Name",
    "Owner",
    "Pipeline",
    "Type",
    "Lead_Source",
    "Tag",
    "Created_Time",
    "Modified_Time",
    "Description",
    "Custom__c",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_mapper_never_panics_on_any_json(
        fields in prop::collection::vec((prop::sample::select(KEYS), arb_json()), 0..20),
        closed_won in any::<bool>(),
        top in arb_json(),
    ) {
        let stamp = stamp("prop");
        let mut obj = serde_json::Map::new();
        for (k, v) in fields {
            obj.insert(k.to_string(), v);
        }
        if closed_won {
            obj.insert("Stage".into(), Value::String("Closed Won".into()));
        }
        let text = Value::Object(obj).to_string();
        let mapped = map_json(&text, &stamp);
        if let Mapped::Quarantined(q) = &mapped {
            prop_assert!(!q.reason.is_empty());
            prop_assert_eq!(q.raw.get(), text.as_str(), "the raw record is kept verbatim");
        }
        // Not even an object.
        let _ = map_json(&top.to_string(), &stamp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_a_stalled_answer_are_committed_while_the_run_waits() {
    // (NDJSON is here too, though a page of rows is larger than its buffer and reaches the file anyway; the
    // sink's own test covers the flush of a small remainder.)
    for sink in ["sqlite:dealsync.db", "ndjson:out.ndjson"] {
        // 15 pages fetched one at a time, and the tenth request's answer takes 4 seconds: the pages before it are
        // written, and they must not wait in an open transaction (keeping readers from them, or locking them
        // out) while the run waits. The writer's idle flush makes them visible 1 second into the stall; without
        // it they would wait for the stalled page, later than the 3.5 seconds looked at. (`run::pipeline`'s
        // paused-time test covers the flush itself.)
        let faults = FaultPlan::parse("slow@10:4000").unwrap();
        let sim = simulator(SimConfig { faults, won_share: 1.0, ..sim_config(3000) }).await;
        let mut run =
            Dealsync::new(&OCTOBER).args(&["--sink", sink]).against(&sim).env("ZOHO_MAX_CONCURRENCY", "1").spawn();
        let dir = run.dir().to_path_buf();
        let visible = || -> Option<i64> {
            if sink.starts_with("sqlite") {
                let c = rusqlite::Connection::open_with_flags(
                    dir.join("dealsync.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .ok()?;
                c.query_row("SELECT count(*) FROM closed_won_deals", [], |r| r.get::<_, i64>(0)).ok()
            } else {
                Some(std::fs::read(dir.join("out.ndjson")).ok()?.iter().filter(|&&b| b == b'\n').count() as i64)
            }
        };
        let started = std::time::Instant::now();
        let mut seen = None;
        while started.elapsed() < Duration::from_millis(3500) && run.running() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(n) = visible().filter(|&n| n > 0) {
                seen = Some(n);
                break;
            }
        }
        let still_waiting = run.running();
        let out = run.wait().await;
        out.assert_code(0);
        let total = expected_ids(&sim, &october()).len() as i64;
        let n = seen.unwrap_or_else(|| panic!("{sink}: no rows became visible in the first 3.5 seconds"));
        assert!(still_waiting, "{sink}: the run was still waiting on the slow answer when its rows became visible");
        assert!(n < total, "{sink}: only the pages before the stall, {n} of {total}");
        assert_eq!(visible(), Some(total), "{sink}: all rows at the end");
        if sink.starts_with("sqlite") {
            assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &october()));
        }
    }
}
