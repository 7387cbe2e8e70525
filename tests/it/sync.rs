//! End-to-end syncs against the simulator.

use chrono::{Duration, TimeZone};
use dealsync::window::{Window, WindowField};
use dealsync_sim::data::{generate, GenSpec};
use dealsync_sim::{SimConfig, SimHandle};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_exactly_the_simulators_closed_won_deals_and_a_rerun_adds_nothing() {
    let first = Dealsync::new(&["sync", "--demo", "--demo-deals", "5000", "--demo-seed", "3"]).run().await;
    first.assert_code(0);

    // Rebuild the demo's dataset independently from its seed and anchor, and compute the truth for the window.
    let anchor = first.event("demo_simulator")["anchor"].as_str().unwrap().to_string();
    let cfg = SimConfig::demo(5000, 3);
    let deals = generate(&GenSpec {
        deals: 5000,
        seed: 3,
        anchor: utc(&anchor),
        span: cfg.span,
        broken: 0,
        won_share: cfg.won_share,
        awaiting_approval: 0,
    });
    let s = first.summary();
    let w = Window::new(
        WindowField::ModifiedTime,
        at(s["window_start"].as_str().unwrap()),
        at(s["window_end"].as_str().unwrap()),
    )
    .unwrap();
    let mut truth: Vec<String> =
        deals.iter().filter(|d| d.is_closed_won() && w.contains(d.modified_at())).map(|d| d.id.to_string()).collect();
    truth.sort();
    assert!(!truth.is_empty(), "the demo window holds closed-won deals");
    assert_eq!(warehouse_ids(&first.demo_db()), truth);
    assert!(!first.db().exists(), "the demo never touches the real warehouse ./dealsync.db");
    assert_eq!(first.count("rows_inserted"), truth.len() as u64);
    assert!(first.count("not_closed_won") > 0, "the demo data includes the contains-trap stages");

    // Same working directory, so the same ./dealsync-demo.db and its ledger.
    let db = first.demo_db();
    let second =
        Dealsync::new(&["sync", "--demo", "--demo-deals", "5000", "--demo-seed", "3"]).reuse(first.dir).run().await;
    second.assert_code(0);
    assert_eq!(second.count("rows_inserted"), 0);
    assert_eq!(second.count("rows_updated"), 0);
    assert_eq!(warehouse_ids(&db), truth, "a second run adds no rows");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_runs WHERE status = 'success'"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_at_a_time_writes_the_window_in_modification_order_reading_each_slice_to_its_end_first() {
    // The window is cut into several slices of several pages each. Reading a begun slice on before starting the
    // next keeps rows near the window's order, which is what keeps SQLite's index pages in its cache; at one
    // request in flight the order is exact.
    let sim = simulator(sim_config(20_000)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-10", "--to", "2026-10-20", "--sink", "sqlite:deals.db"])
        .against(&sim)
        .env("ZOHO_MAX_CONCURRENCY", "1")
        .run()
        .await;
    out.assert_code(0);
    let db = out.dir.path().join("deals.db");
    let rows = query_i64(&db, "SELECT count(*) FROM closed_won_deals");
    assert!(rows > 1500, "4 slices of two pages or more each (found {rows} rows)");
    assert!(out.count("pages") >= 8, "several pages a slice (found {})", out.count("pages"));
    let backwards = query_i64(
        &db,
        "SELECT count(*) FROM (SELECT julianday(modified_time) - lag(julianday(modified_time)) OVER (ORDER BY rowid) AS d
         FROM closed_won_deals) WHERE d < 0",
    );
    assert_eq!(backwards, 0, "rows written after a later one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_a_backfill_never_duplicates_or_changes_rows() {
    let sim = simulator(sim_config(3000)).await;
    let args = ["sync", "--from", "2026-10-10", "--to", "2026-10-20", "--sink", "sqlite:deals.db"];
    let first = Dealsync::new(&args).against(&sim).run().await;
    first.assert_code(0);
    let db = first.dir.path().join("deals.db");
    let before = warehouse_ids(&db);
    let raw_before = query_i64(&db, "SELECT sum(length(raw)) FROM closed_won_deals");

    let second = Dealsync::new(&args).against(&sim).reuse(first.dir).run().await;
    second.assert_code(0);
    assert_eq!(second.count("rows_inserted"), 0);
    assert_eq!(second.count("rows_updated"), 0);
    assert_eq!(second.count("rows_unchanged"), before.len() as u64);
    assert_eq!(warehouse_ids(&db), before);
    assert_eq!(query_i64(&db, "SELECT sum(length(raw)) FROM closed_won_deals"), raw_before);
    assert_eq!(before, expected_ids(&sim, &window("2026-10-10T00:00:00Z", "2026-10-20T00:00:00Z")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_windows_are_half_open_and_keep_their_offsets() {
    let sim = simulator(sim_config(2000)).await;
    // Two closed-won deals far enough apart; the window starts exactly at the first and ends exactly at the
    // second, written in +05:30 as Zoho would show them.
    let won: Vec<_> = sim.closed_won(&window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"));
    let (a, b) = (&won[10], &won[200]);
    assert!(a.modified < b.modified);
    let ist = chrono::FixedOffset::east_opt(19_800).unwrap();
    let from = ist.timestamp_opt(a.modified, 0).unwrap().to_rfc3339();
    let to = ist.timestamp_opt(b.modified, 0).unwrap().to_rfc3339();
    assert!(from.contains("+05:30"));

    let out = Dealsync::new(&["sync", "--from", &from, "--to", &to]).against(&sim).run().await;
    out.assert_code(0);
    let ids = warehouse_ids(&out.db());
    assert!(ids.contains(&a.id.to_string()), "the start is inclusive");
    assert!(!ids.contains(&b.id.to_string()), "the end is exclusive");
    assert_eq!(ids, expected_ids(&sim, &Window::new(WindowField::ModifiedTime, at(&from), at(&to)).unwrap()));
    assert_eq!(out.summary()["window_start"], from.as_str());
}

/// Requests a sync makes after its last row: one deletions page, one stage-change COQL request per 2,000 deals
/// in the window that are not won, and the reconciliation count.
fn requests_after_writing(sim: &SimHandle, from: &str, to: &str) -> u64 {
    let mut not_won = 0u64;
    let (lo, hi) = (utc(from).timestamp(), utc(to).timestamp());
    sim.mutate(|deals| {
        not_won = deals.iter().filter(|d| d.modified >= lo && d.modified < hi && !d.is_closed_won()).count() as u64
    });
    1 + not_won.div_ceil(2000).max(1) + 1
}

/// Syncs `--from`/`--to` as a user gives them (dates or instants) and checks that the warehouse then holds exactly
/// the simulator's closed-won deals of that window, more than `more_than` of them. Returns the run and those ids.
async fn syncs_exactly(sim: &SimHandle, from: &str, to: &str, more_than: usize) -> (Outcome, Vec<String>) {
    let bound = |s: &str| dealsync::config::spec::parse_bound(s).unwrap();
    let truth = expected_ids(sim, &Window::new(WindowField::ModifiedTime, bound(from), bound(to)).unwrap());
    assert!(truth.len() > more_than, "{} closed-won deals", truth.len());
    let out = Dealsync::new(&["sync", "--from", from, "--to", to]).against(sim).run().await;
    out.assert_code(0);
    assert_eq!(warehouse_ids(&out.db()), truth);
    (out, truth)
}

/// The search requests of a run (with `RUST_LOG=dealsync=debug`).
fn searches(out: &Outcome) -> Vec<String> {
    out.events()
        .iter()
        .filter(|e| e["event"] == "zoho_request")
        .map(|e| e["request"].as_str().unwrap().to_string())
        .filter(|r| r.contains("/Deals/search?"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_long_backfill_is_counted_first_and_read_in_slices_of_one_page_each() {
    let sim = simulator(sim_config(20_000)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"])
        .env("RUST_LOG", "dealsync=debug")
        .against(&sim)
        .run()
        .await;
    out.assert_code(0);
    let requests: Vec<String> = out
        .events()
        .iter()
        .filter(|e| e["event"] == "zoho_request")
        .map(|e| e["request"].as_str().unwrap().to_string())
        .collect();
    // The count goes before any search, so that every deal a search returns was in the window when counted.
    let first_search = requests.iter().position(|r| r.contains("/Deals/search?")).unwrap();
    assert!(
        requests[..first_search].iter().any(|r| r.ends_with("/crm/v8/coql")),
        "counted first: {:?}",
        &requests[..first_search]
    );
    // No criteria is read past its first page: no offset for ties or edits to disturb.
    assert!(
        searches(&out).iter().all(|r| r.contains("page=1&") && r.contains("approved=both")),
        "{:?}",
        searches(&out)
    );
    assert_eq!(
        out.count("coql_counts"),
        1,
        "one count, which also proves the run complete and serves the reconciliation"
    );
    assert_eq!(
        (out.count("coql_pages"), out.count("by_id_requests"), out.count("repaired")),
        (0, 0, 0),
        "nothing to list or repair: {}",
        out.summary()
    );
    assert_eq!(out.summary()["crm_closed_won"], out.summary()["warehouse_closed_won"]);
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")));
    // Slices are planned at 150 closed-won deals for pages of 200: search also returns look-alike stages.
    let won = out.count("deals_fetched") - out.count("not_closed_won");
    let pages = out.count("pages");
    assert!(
        pages <= won.div_ceil(150) + 2 * out.count("windows_split"),
        "{pages} pages for {won} deals: {}",
        out.summary()
    );
    let rss_kb = out.count("peak_rss_kb");
    assert!((1024..200 * 1024).contains(&rss_kb), "the summary reports the process's peak memory: {rss_kb} KiB");
    // Beyond the pages: the count and the requests after writing.
    let after = requests_after_writing(&sim, "2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z") - 1;
    assert!(out.count("requests") <= pages + out.count("windows_split") + 1 + after + 1, "{}", out.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deals_sharing_a_second_are_all_synced_once_whatever_order_ties_come_back_in() {
    // 20,000 deals in 20 seconds, about 300 closed won a second, ties in another order on every request.
    let sim = simulator(SimConfig {
        deals: 20_000,
        span: Duration::seconds(20),
        anchor: utc("2026-10-15T12:00:20Z"),
        shuffled_ties: true,
        ..sim_config(0)
    })
    .await;
    let (out, truth) = syncs_exactly(&sim, "2026-10-15T12:00:00Z", "2026-10-15T12:00:20Z", 4000).await;
    assert_eq!(out.count("rows_inserted"), truth.len() as u64);
    assert!(
        out.count("by_id_requests") >= truth.len() as u64 / 100,
        "seconds holding more than a page are read by id: {}",
        out.summary()
    );
    assert_eq!(out.count("repaired"), 0, "nothing was missed on the way: {}", out.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_2000_deals_in_one_second_are_listed_by_id_and_the_rest_of_the_window_searched() {
    // 9000 deals in one second, then a third of them moved 3 seconds later.
    let sim = simulator(SimConfig {
        deals: 9000,
        span: Duration::seconds(1),
        anchor: utc("2026-10-15T12:00:01Z"),
        ..sim_config(0)
    })
    .await;
    sim.mutate(|deals| deals.iter_mut().filter(|d| d.id.is_multiple_of(3)).for_each(|d| d.modified += 3));
    let (out, truth) = syncs_exactly(&sim, "2026-10-15T12:00:00Z", "2026-10-15T12:00:10Z", 2600).await;
    assert!(out.count("coql_pages") >= 2, "the crowded seconds listed by id through COQL: {}", out.summary());
    assert!(out.count("by_id_requests") >= truth.len() as u64 / 100, "{}", out.summary());
    // Deals read by id have the columns of deals found by search: the owner's e-mail, which COQL leaves out.
    assert_eq!(
        query_i64(&out.db(), "SELECT count(*) FROM closed_won_deals WHERE owner_email IS NULL OR account_name IS NULL"),
        0
    );
    assert_eq!(
        query_i64(&out.db(), "SELECT count(*) FROM closed_won_deals WHERE raw NOT LIKE '%\"$approval_state\"%'"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_that_ignores_the_order_asked_for_is_read_in_halved_slices() {
    let sim =
        simulator(SimConfig { deals: 20_000, span: Duration::days(2), ignores_sort: true, ..sim_config(0) }).await;
    // Slices planned at 150 deals rarely overflow; a tenth of the deals in one hour makes some.
    let end = utc("2026-11-01T00:00:00Z").timestamp();
    sim.mutate(|deals| {
        deals
            .iter_mut()
            .filter(|d| d.id.is_multiple_of(10))
            .for_each(|d| d.modified = end - 3600 + (d.id % 3600) as i64)
    });
    let (out, _) = syncs_exactly(&sim, "2026-10-30", "2026-11-01", 5000).await;
    assert!(out.count("windows_split") >= 1, "slices read again in halves: {}", out.summary());
    assert_eq!(out.count("repaired"), 0, "{}", out.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_2000_matches_in_one_window_are_all_synced() {
    let sim = simulator(SimConfig { deals: 20_000, span: Duration::days(2), ..sim_config(0) }).await;
    let (out, truth) = syncs_exactly(&sim, "2026-10-30", "2026-11-01", 5000).await;
    assert_eq!(out.count("coql_pages"), 0);

    // Reconciliation lists ids with keyset paging when they differ: delete the last id (on the third page).
    let victim = truth.last().unwrap().clone();
    rusqlite::Connection::open(out.db())
        .unwrap()
        .execute("DELETE FROM closed_won_deals WHERE deal_id = ?1", [&victim])
        .unwrap();
    let verify = Dealsync::new(&["verify", "--from", "2026-10-30", "--to", "2026-11-01"])
        .against(&sim)
        .reuse(out.dir)
        .run()
        .await;
    verify.assert_code(3);
    assert_eq!(verify.event("reconciliation")["missing"], serde_json::json!([victim]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_too_dense_to_cut_is_read_by_id() {
    // 9000 deals modified within one second: about 2700 closed won, more than search may return.
    let sim = simulator(SimConfig {
        deals: 9000,
        span: Duration::seconds(1),
        anchor: utc("2026-10-15T12:00:01Z"),
        ..sim_config(0)
    })
    .await;
    let (out, truth) = syncs_exactly(&sim, "2026-10-15T12:00:00Z", "2026-10-15T12:00:01Z", 2000).await;
    assert_eq!(out.count("coql_pages"), truth.len().div_ceil(2000) as u64, "{}", out.summary());
    assert_eq!(out.count("by_id_requests"), truth.len().div_ceil(100) as u64, "{}", out.summary());
}

/// Ten days of 30,000 deals (about 9,000 closed won, some 70 requests), synced with `latency_ms` per answer and
/// at most `concurrency` requests in flight; the run must succeed.
async fn ten_busy_days_synced(latency_ms: u64, concurrency: &str) -> (SimHandle, Outcome) {
    let sim = simulator(SimConfig {
        deals: 30_000,
        span: Duration::days(10),
        anchor: utc("2026-11-01T00:00:00Z"),
        latency: std::time::Duration::from_millis(latency_ms),
        ..sim_config(0)
    })
    .await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-22", "--to", "2026-11-01"])
        .against(&sim)
        .env("ZOHO_MAX_CONCURRENCY", concurrency)
        .run()
        .await;
    out.assert_code(0);
    (sim, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_never_exceed_zoho_max_concurrency() {
    let (sim, out) = ten_busy_days_synced(60, "3").await;
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &window("2026-10-22T00:00:00Z", "2026-11-01T00:00:00Z")));
    let max = sim.stats().max_in_flight;
    assert!(max <= 3, "{max} requests in flight");
    assert!(max >= 2, "requests overlap ({max})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_connections_alive_instead_of_opening_one_per_request() {
    let (sim, _) = ten_busy_days_synced(20, "4").await;
    let stats = sim.stats();
    let requests = stats.api_requests + stats.token_requests;
    assert!(requests >= 40, "{requests} requests: too few to tell");
    // One connection per request in flight, and the token's, which the first search may not have found idle;
    // requests that overlap need more than one (HTTP/1.1 sends one at a time on a connection). A connection goes
    // back to the pool a moment after its body is read, so on a loaded machine a request may start just before
    // it does and open one more: a few over the bound of 4 + 1, never one per request.
    assert!((2..=8).contains(&stats.connections), "{} connections for {requests} requests", stats.connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_that_only_contain_closed_won_are_filtered_out() {
    let sim = simulator(sim_config(4000)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim).run().await;
    out.assert_code(0);
    let trap = sim.closed_won(&window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")).len();
    assert!(trap > 0);
    assert!(out.count("not_closed_won") > 0, "Zoho's contains-like equals returned trap stages");

    assert_eq!(query_i64(&out.db(), "SELECT count(*) FROM closed_won_deals WHERE stage <> 'Closed Won'"), 0);
    assert_eq!(
        out.count("deals_fetched") - out.count("not_closed_won"),
        expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")).len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmappable_records_are_quarantined_with_their_reason_and_the_run_exits_3() {
    let sim = simulator(SimConfig { broken: 8, ..sim_config(3000) }).await;
    let w = window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z");
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim).run().await;
    out.assert_code(3);
    let db = out.db();
    assert_eq!(warehouse_ids(&db), expected_ids(&sim, &w), "every good deal is still written");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_quarantine"), 8);
    for (needle, n) in [("Closing_Date:%", 2), ("id: missing", 2), ("Amount:%", 2), ("Probability:%", 2)] {
        let sql = format!("SELECT count(*) FROM _dealsync_quarantine WHERE reason LIKE '{needle}'");
        assert_eq!(query_i64(&db, &sql), n, "{needle}");
    }
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM _dealsync_quarantine WHERE deal_id IS NOT NULL AND raw LIKE '%' || deal_id || '%'"
        ),
        6,
        "quarantined records keep their id and raw text"
    );
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_runs WHERE status = 'partial' AND exit_code = 3"), 1);
    assert_eq!(out.count("quarantined"), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_record_read_again_by_later_runs_is_quarantined_again_and_blocks_nothing() {
    let sim = simulator(SimConfig { broken: 3, ..sim_config(3000) }).await;
    let w = window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z");
    let args = ["sync", "--from", "2026-10-01", "--to", "2026-11-01"];
    let first = Dealsync::new(&args).against(&sim).run().await;
    first.assert_code(3);
    let second = Dealsync::new(&args).against(&sim).reuse(first.dir).run().await;
    second.assert_code(3);
    let third = Dealsync::new(&args).against(&sim).reuse(second.dir).run().await;
    third.assert_code(3);
    let db = third.db();
    assert_eq!(warehouse_ids(&db), expected_ids(&sim, &w), "every good deal is written by every run");
    assert_eq!(third.count("quarantined"), 3);
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM _dealsync_quarantine"),
        9,
        "one row per quarantined record and run"
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM (SELECT deal_id, run_id FROM _dealsync_quarantine GROUP BY 1, 2)"),
        9
    );
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_runs WHERE exit_code = 3"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_keyed_by_deal_from_an_older_dealsync_is_rebuilt_and_keeps_its_rows() {
    let sim = simulator(SimConfig { broken: 3, ..sim_config(3000) }).await;
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("dealsync.db")).unwrap();
    // The quarantine as dealsync created it before: deal_id its primary key.
    conn.execute_batch(
        "CREATE TABLE _dealsync_quarantine (run_id TEXT NOT NULL, deal_id TEXT PRIMARY KEY, reason TEXT NOT NULL, \
         raw TEXT NOT NULL, quarantined_at TEXT NOT NULL);
         CREATE INDEX _dealsync_quarantine_deal ON _dealsync_quarantine (deal_id);
         INSERT INTO _dealsync_quarantine VALUES ('old', '1', 'Amount: not a number', '{}', '2026-09-01T00:00:00Z');",
    )
    .unwrap();
    drop(conn);
    let args = ["sync", "--from", "2026-10-01", "--to", "2026-11-01"];
    let first = Dealsync::new(&args).against(&sim).reuse(dir).run().await;
    first.assert_code(3);
    let second = Dealsync::new(&args).against(&sim).reuse(first.dir).run().await;
    second.assert_code(3);
    let db = second.db();
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_quarantine WHERE run_id = 'old'"), 1);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_quarantine"), 7);
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM pragma_table_info('_dealsync_quarantine') WHERE pk > 0"),
        0,
        "the quarantine has no primary key any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_whose_end_lies_in_the_future_syncs_only_the_settled_part_and_says_so() {
    let sim = simulator(sim_config(1500)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2099-01-01"]).against(&sim).run().await;
    out.assert_code(0);
    let end = utc(out.summary()["window_end"].as_str().unwrap());
    let settled = chrono::Utc::now() - Duration::minutes(5);
    assert!(end <= settled && end > settled - Duration::minutes(5), "clamped to now minus the index lag: {end}");
    assert_eq!(out.event("window_clamped")["requested_end"], "2099-01-01T00:00:00+00:00");
    let w = window("2026-10-01T00:00:00Z", &end.to_rfc3339());
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &w));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deals_lost_or_deleted_between_the_listing_and_their_read_by_id_are_no_false_alarm() {
    // Search does not see the last two days yet, so those deals are listed and read by id; the first two read
    // that way were lost and deleted in between.
    let cfg = SimConfig {
        search_lag: std::time::Duration::from_secs(2 * 86_400),
        changed_before_by_id: 2,
        ..SimConfig::demo(4000, 31)
    };
    let sim = simulator(cfg).await;
    let from = (chrono::Utc::now() - Duration::days(10)).format("%Y-%m-%d").to_string();
    let out = Dealsync::new(&["sync", "--from", &from]).against(&sim).run().await;
    out.assert_code(0);
    assert!(out.count("repaired") > 0, "deals were read by id");
    let end = out.summary()["window_end"].as_str().unwrap().to_string();
    let w = window(&format!("{from}T00:00:00Z"), &end);
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &w), "the warehouse holds what Zoho has now");
    assert_eq!(out.event("reconciliation")["outcome"], "match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_run_with_no_index_lag_the_next_nightly_reads_only_its_overlap_not_a_day() {
    let sim = simulator(SimConfig::demo(2000, 5)).await;
    let first = Dealsync::new(&["sync", "--index-lag", "0s"]).against(&sim).run().await;
    first.assert_code(0);
    let next = Dealsync::new(&["sync"]).against(&sim).reuse(first.dir).run().await;
    next.assert_code(0);
    let (start, end) =
        (utc(next.summary()["window_start"].as_str().unwrap()), utc(next.summary()["window_end"].as_str().unwrap()));
    assert_eq!(end - start, Duration::hours(1), "the overlap before the end, as the ledger says");
    assert_eq!(next.event("window")["from_ledger"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_part_way_reports_the_pages_it_read_in_its_summary_and_ledger() {
    let spec: Vec<String> = (8..60).map(|n| format!("500@{n}")).collect();
    let faults = dealsync_sim::faults::FaultPlan::parse(&spec.join(",")).unwrap();
    let sim = simulator(SimConfig { faults, ..sim_config(6000) }).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--max-attempts", "2"])
        .against(&sim)
        .env("ZOHO_MAX_CONCURRENCY", "1")
        .run()
        .await;
    out.assert_code(75);
    let pages = out.count("pages");
    assert!(pages > 0, "the pages read before the failure are counted: {}", out.summary());
    assert_eq!(query_i64(&out.db(), "SELECT pages FROM _dealsync_runs"), pages as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_never_stands_in_for_a_closed_won_deal_the_index_hides() {
    // Search does not see the last two hours, where exactly one closed-won deal is. It does return an unreadable
    // record (nested too deep) whose stage is not "Closed Won" (Zoho's equals matched it): the run fetched as
    // many deals as Zoho counts closed-won, one of them quarantined, so the count alone would look complete.
    let cfg = SimConfig { search_lag: std::time::Duration::from_secs(2 * 3600), ..SimConfig::demo(3000, 17) };
    let sim = simulator(cfg).await;
    let now = chrono::Utc::now().timestamp();
    let mut hidden = 0;
    sim.mutate(|deals| {
        for d in deals.iter_mut().filter(|d| d.modified > now - 3 * 3600) {
            d.modified = now - 4 * 3600;
            d.rendered = Default::default();
        }
        let won = deals.iter_mut().find(|d| d.is_closed_won() && d.broken.is_none()).unwrap();
        won.modified = now - 3600;
        won.rendered = Default::default();
        hidden = won.id;
        let trap =
            deals.iter_mut().find(|d| d.stage == dealsync_sim::data::TRAP_STAGES[0] && d.broken.is_none()).unwrap();
        trap.broken = Some(dealsync_sim::data::Broken::NestedTooDeep);
        trap.modified = now - 5 * 3600;
        trap.rendered = Default::default();
        deals.sort_by_key(|d| (d.modified, d.id));
    });
    let from = (chrono::Utc::now() - Duration::days(2)).format("%Y-%m-%d").to_string();
    let out = Dealsync::new(&["sync", "--from", &from]).against(&sim).run().await;
    out.assert_code(3);
    assert_eq!(out.count("quarantined"), 1);
    assert!(warehouse_ids(&out.db()).contains(&hidden.to_string()), "the deal the index hid was read by id");
    let end = out.summary()["window_end"].as_str().unwrap().to_string();
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &window(&format!("{from}T00:00:00Z"), &end)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_backfill_without_to_is_refused_naming_to() {
    let sim = simulator(sim_config(500)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01"])
        .against(&sim)
        .env("CLOUD_RUN_TASK_INDEX", "1")
        .env("CLOUD_RUN_TASK_COUNT", "4")
        .run()
        .await;
    out.assert_code(2);
    assert!(out.stderr.contains("--to"), "{}", out.stderr);
    assert_eq!(sim.stats().search_requests, 0, "refused before any request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_starts_the_next_default_window_and_backfills_do_not_move_it() {
    let sim = simulator(SimConfig::demo(2000, 5)).await;
    let first = Dealsync::new(&["sync"]).against(&sim).run().await;
    first.assert_code(0);
    let end1 = first.summary()["window_end"].as_str().unwrap().to_string();

    let backfill = Dealsync::new(&["sync", "--from", "2026-01-01", "--to", "2026-01-02"])
        .against(&sim)
        .reuse(first.dir)
        .run()
        .await;
    backfill.assert_code(0);

    let next = Dealsync::new(&["sync", "--overlap", "30m"]).against(&sim).reuse(backfill.dir).run().await;
    next.assert_code(0);
    let start2 = utc(next.summary()["window_start"].as_str().unwrap());
    assert_eq!(start2, utc(&end1) - Duration::minutes(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_rows_and_writes_nothing() {
    let sim = simulator(sim_config(1500)).await;
    let w = window("2026-10-01T00:00:00Z", "2026-10-08T00:00:00Z");
    let out =
        Dealsync::new(&["sync", "--dry-run", "--from", "2026-10-01", "--to", "2026-10-08"]).against(&sim).run().await;
    out.assert_code(0);
    let mut ids: Vec<String> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["deal_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, expected_ids(&sim, &w));
    assert!(!out.db().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_export_writes_or_removes_its_quarantine_file_so_the_pair_belongs_to_one_run() {
    let args = ["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--sink", "ndjson:rows.ndjson"];
    let broken = simulator(SimConfig { broken: 3, ..sim_config(1500) }).await;
    let first = Dealsync::new(&args).against(&broken).run().await;
    first.assert_code(3);
    let quarantine = first.dir.path().join("rows.ndjson.quarantine.ndjson");
    assert_eq!(std::fs::read_to_string(&quarantine).unwrap().lines().count(), 3);
    let clean = simulator(sim_config(1500)).await;
    let second = Dealsync::new(&args).against(&clean).reuse(first.dir).run().await;
    second.assert_code(0);
    assert!(!quarantine.exists(), "a clean export leaves no stale quarantine beside it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_rows_carry_exact_decimals_and_the_raw_record() {
    let sim = simulator(sim_config(1500)).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01", "--sink", "ndjson:rows.ndjson"])
        .against(&sim)
        .run()
        .await;
    out.assert_code(0);
    let text = std::fs::read_to_string(out.dir.path().join("rows.ndjson")).unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")).len());
    for r in &rows {
        assert_eq!(r["raw"]["id"], r["deal_id"]);
        assert_eq!(r["raw"]["Stage"], "Closed Won");
        if let Some(a) = r["amount"].as_str() {
            let raw = r["raw"]["Amount"].to_string();
            assert_eq!(a.parse::<rust_decimal::Decimal>().unwrap(), raw.parse::<rust_decimal::Decimal>().unwrap());
        }
    }
    assert!(rows.iter().any(|r| r["amount"] == "12345678901.25"), "a huge amount round-trips exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_date_windows_select_by_date() {
    let sim = simulator(sim_config(3000)).await;
    let out = Dealsync::new(&["sync", "--window-field", "Closing_Date", "--from", "2026-10-05", "--to", "2026-10-12"])
        .against(&sim)
        .run()
        .await;
    out.assert_code(0);
    let w = Window::new(WindowField::ClosingDate, at("2026-10-05T00:00:00Z"), at("2026-10-12T00:00:00Z")).unwrap();
    assert_eq!(warehouse_ids(&out.db()), expected_ids(&sim, &w));
    assert_eq!(
        query_i64(
            &out.db(),
            "SELECT count(*) FROM closed_won_deals WHERE closing_date < '2026-10-05' OR closing_date >= '2026-10-12'"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_passes_on_a_clean_run_and_names_a_row_removed_behind_dealsyncs_back() {
    let sim = simulator(sim_config(3000)).await;
    let args = ["sync", "--from", "2026-10-01", "--to", "2026-11-01"];
    let out = Dealsync::new(&args).against(&sim).run().await;
    out.assert_code(0);
    let rec = out.event("reconciliation");
    assert_eq!(rec["outcome"], "match");
    let truth = expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"));
    assert_eq!(rec["crm"], truth.len() as u64);
    assert_eq!(out.count("warehouse_closed_won"), truth.len() as u64);

    // Someone deletes two rows from the warehouse.
    let db = out.db();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM closed_won_deals WHERE deal_id IN (?1, ?2)", [&truth[3], &truth[7]]).unwrap();
    drop(conn);
    let verify = Dealsync::new(&["verify", "--from", "2026-10-01", "--to", "2026-11-01"])
        .against(&sim)
        .reuse(out.dir)
        .run()
        .await;
    verify.assert_code(3);
    let rec = verify.event("reconciliation");
    assert_eq!(rec["outcome"], "mismatch");
    assert_eq!(rec["missing"], serde_json::json!([truth[3], truth[7]]));
    assert_eq!(rec["extra"], serde_json::json!([]));
    let report: serde_json::Value = serde_json::from_str(verify.stdout.trim()).unwrap();
    assert_eq!(report["crm"].as_u64().unwrap() - report["warehouse"].as_u64().unwrap(), 2);
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM closed_won_deals"),
        truth.len() as i64 - 2,
        "verify writes nothing"
    );

    // The next sync of the window puts them back, and agrees again.
    let again = Dealsync::new(&args).against(&sim).reuse(verify.dir).run().await;
    again.assert_code(0);
    assert_eq!(again.count("rows_inserted"), 2);
    assert_eq!(again.event("reconciliation")["outcome"], "match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_reopened_deals_are_marked_on_the_next_run() {
    let sim = simulator(sim_config(3000)).await;
    let w = window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z");
    let args = ["sync", "--from", "2026-10-01", "--to", "2026-11-01"];
    let first = Dealsync::new(&args).against(&sim).run().await;
    first.assert_code(0);
    let won = sim.closed_won(&w);
    let (gone, reopened, lost) = (won[10].id, won[20].id, won[30].id);
    let deleted_at = utc("2026-10-20T08:00:00Z").timestamp();
    sim.mutate(|deals| {
        for d in deals.iter_mut() {
            if d.id == gone {
                d.deleted = true;
                d.deleted_at = Some(deleted_at);
            } else if d.id == reopened || d.id == lost {
                d.stage = if d.id == lost { "Closed Lost" } else { "Negotiation/Review" };
                d.modified = utc("2026-10-31T12:00:00Z").timestamp();
            }
        }
    });
    let second = Dealsync::new(&args).against(&sim).reuse(first.dir).run().await;
    second.assert_code(0);
    assert_eq!((second.count("rows_deleted"), second.count("rows_reopened")), (1, 2));
    let db = second.db();
    let row = |id: u64, col: &str| -> String {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                &format!("SELECT CAST({col} AS TEXT) FROM closed_won_deals WHERE deal_id = ?1"),
                [id.to_string()],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!((row(gone, "is_deleted"), row(gone, "deleted_time")), ("1".into(), "2026-10-20T08:00:00Z".into()));
    assert_eq!((row(reopened, "is_closed_won"), row(reopened, "stage")), ("0".into(), "Negotiation/Review".into()));
    assert_eq!((row(lost, "stage"), row(lost, "modified_time")), ("Closed Lost".into(), "2026-10-31T12:00:00Z".into()));
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM closed_won_deals"),
        won.len() as i64,
        "soft deletes: no row is removed"
    );
    assert_eq!(second.event("reconciliation")["outcome"], "match", "reconciliation counts only live, won rows");

    // Won again later: the newer closed-won copy makes the row won again.
    sim.mutate(|deals| {
        if let Some(d) = deals.iter_mut().find(|d| d.id == reopened) {
            d.stage = "Closed Won";
            d.modified = utc("2026-10-31T13:00:00Z").timestamp();
        }
    });
    let third = Dealsync::new(&args).against(&sim).reuse(second.dir).run().await;
    third.assert_code(0);
    assert_eq!(row(reopened, "is_closed_won"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_an_older_dealsync_gains_the_new_columns() {
    let sim = simulator(sim_config(1000)).await;
    let run = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim);
    // The table as the first release created it: no is_closed_won, is_deleted, deleted_time.
    let old: Vec<String> = dealsync::schema::columns(&[])
        .iter()
        .filter(|c| !matches!(&*c.name, "is_closed_won" | "is_deleted" | "deleted_time"))
        .map(|c| format!("{} {}", c.name, c.sqlite_definition()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("dealsync.db")).unwrap();
    conn.execute_batch(&format!("CREATE TABLE closed_won_deals ({})", old.join(", "))).unwrap();
    conn.execute("INSERT INTO closed_won_deals (deal_id, stage, modified_time, raw, sync_run_id, synced_at) VALUES ('1', 'Closed Won', '2026-09-01T00:00:00Z', '{}', 'old', '2026-09-01T00:00:00Z')", []).unwrap();
    drop(conn);
    let out = run.reuse(dir).run().await;
    out.assert_code(0);
    assert_eq!(
        query_i64(&out.db(), "SELECT is_closed_won + is_deleted * 10 FROM closed_won_deals WHERE deal_id = '1'"),
        1,
        "old rows count as won, not deleted"
    );
    assert_eq!(
        warehouse_ids(&out.db()).len(),
        expected_ids(&sim, &window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")).len() + 1
    );
    assert_eq!(query_i64(&out.db(), "PRAGMA page_size"), 4096, "an existing file keeps its page size");
    let hint = out.event("sqlite_page_size");
    assert_eq!(hint["page_size"], 4096);
    // The file as the sink names it (the default, relative to the run's directory), quoted for a shell.
    let command = "sqlite3 './dealsync.db' 'PRAGMA page_size = 16384; VACUUM'";
    assert!(hint["message"].as_str().unwrap().contains(command), "{hint}");

    let fresh = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"]).against(&sim).run().await;
    fresh.assert_code(0);
    assert_eq!(query_i64(&fresh.db(), "PRAGMA page_size"), 16384, "a new warehouse gets pages that hold several rows");
    assert!(fresh.events().iter().all(|e| e["event"] != "sqlite_page_size"), "a new warehouse needs no conversion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_search_honours_sort_by_and_sort_order_and_refuses_unknown_ones() {
    let sim = simulator(sim_config(3000)).await;
    let http = reqwest::Client::new();
    let auth = sim_auth(&sim).await;
    let search = |extra: &'static [(&'static str, &'static str)]| {
        let (http, auth, url) = (http.clone(), auth.clone(), format!("{}/crm/v8/Deals/search", sim.base_url()));
        async move {
            let mut q = vec![("criteria", "(Stage:equals:Closed Won)"), ("page", "2"), ("per_page", "200")];
            q.extend_from_slice(extra);
            let r = http.get(url).query(&q).header("Authorization", auth).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let times = |body: &serde_json::Value| -> Vec<chrono::DateTime<chrono::FixedOffset>> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| chrono::DateTime::parse_from_rfc3339(d["Modified_Time"].as_str().unwrap()).unwrap())
            .collect()
    };
    let ids = |body: &serde_json::Value| -> Vec<u64> {
        body["data"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().parse().unwrap()).collect()
    };

    let (status, asc) = search(&[("sort_by", "Modified_Time"), ("sort_order", "asc")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        (asc["info"]["sort_by"].as_str(), asc["info"]["sort_order"].as_str()),
        (Some("Modified_Time"), Some("asc"))
    );
    let t = times(&asc);
    assert_eq!(t.len(), 200);
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "ascending modification times");

    let (_, default) = search(&[]).await;
    assert_eq!(
        (default["info"]["sort_by"].as_str(), default["info"]["sort_order"].as_str()),
        (Some("id"), Some("desc"))
    );
    assert!(ids(&default).windows(2).all(|w| w[0] > w[1]), "Zoho's default: id, newest first");

    let (status, bad) = search(&[("sort_by", "Amount")]).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("INVALID_DATA")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_far_denser_at_its_end_than_its_count_foretold_is_still_read_in_full() {
    // A quarter of the deals moved into the window's last 30 minutes: slices planned at the window's average
    // density hold far more than a page there.
    let sim = simulator(SimConfig { deals: 20_000, span: Duration::days(2), ..sim_config(0) }).await;
    let end = utc("2026-11-01T00:00:00Z").timestamp();
    sim.mutate(|deals| {
        deals.iter_mut().filter(|d| d.id % 4 == 0).for_each(|d| d.modified = end - 1800 + (d.id % 1800) as i64)
    });
    let (out, truth) = syncs_exactly(&sim, "2026-10-30", "2026-11-01", 5000).await;
    assert_eq!(out.count("rows_inserted"), truth.len() as u64);
}
