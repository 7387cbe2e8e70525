//! What a Zoho server may do that our simulator did not do before (issue: right against the real API): answers
//! HTTP allows (304 to a conditional request), search orders with ties in any order, a lagging search index,
//! records awaiting approval, and edits while a run pages. Each behaviour alone, then all together.

use dealsync::sim::SimConfig;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nightly_runs_in_a_row_succeed_when_zoho_answers_304_and_the_second_starts_where_the_first_ended() {
    let sim = simulator(SimConfig::demo(3000, 9)).await;
    assert!(sim.config().not_modified, "304 to a conditional request is the simulator's default");
    let first = Dealsync::new(&["sync"]).against(&sim).run().await;
    first.assert_code(0);
    assert!(sim.stats().not_modified >= 1, "the deleted-records request was answered 304: {:?}", sim.stats());
    assert_eq!(first.summary()["outcome"], "success");
    let first_end = at(first.summary()["window_end"].as_str().unwrap());

    let second = Dealsync::new(&["sync"]).against(&sim).reuse(first.dir).run().await;
    second.assert_code(0);
    assert!(sim.stats().not_modified >= 2, "{:?}", sim.stats());
    let second_start = at(second.summary()["window_start"].as_str().unwrap());
    assert_eq!(second_start, first_end - chrono::Duration::hours(1), "the second window starts at the first's end minus the overlap");
    let db = second.db();
    assert_eq!(query_i64(&db, "SELECT count(*) FROM _dealsync_runs WHERE status = 'success' AND kind = 'scheduled'"), 2);
}
