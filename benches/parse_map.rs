//! Micro-benchmark: parse Zoho search pages (200 realistic 60-field deals each) and map every deal to a row,
//! exactly as a sync does, on one thread. Reports deals per CPU-second (user + system time of this process):
//! the median of several rounds and their range, since one round on a shared machine says little. Every deal
//! generated is closed won and well formed, so a deal that does not become a row fails the benchmark.
//! Run: cargo bench --bench parse_map [-- DEALS [ROUNDS]] (defaults: 200,000 deals, 5 rounds)

#![allow(clippy::disallowed_methods)] // SPLIT=1 asks for the split profile

use chrono::{Duration, TimeZone, Utc};
use dealsync::mapping::{Mapped, Mapper, RunStamp};
use dealsync_sim::data::{generate, GenSpec};

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let deals = numbers.first().copied().unwrap_or(200_000);
    let rounds = numbers.get(1).copied().unwrap_or(5).max(1);
    let spec = GenSpec {
        deals: 20_000,
        seed: 3,
        anchor: Utc.timestamp_opt(1_793_500_000, 0).unwrap(),
        span: Duration::days(30),
        broken: 0,
        won_share: 1.0,
        awaiting_approval: 0,
    };
    let tz = chrono::FixedOffset::east_opt(19_800).unwrap();
    // Pages as the simulator serves them: 200 records and an info block.
    let pages: Vec<String> = generate(&spec)
        .chunks(200)
        .map(|chunk| {
            let mut body = String::from("{\"data\":[");
            for (i, d) in chunk.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                d.render(tz, None, &mut body);
            }
            body.push_str("],\"info\":{\"per_page\":200,\"count\":200,\"page\":1,\"more_records\":true}}");
            body
        })
        .collect();
    let bytes: usize = pages.iter().map(String::len).sum();
    let columns = std::sync::Arc::new(dealsync::mapping::Columns::new(&[]));
    let stamp = RunStamp { run_id: "bench".into(), synced_at: chrono::Utc::now(), columns };

    if std::env::var("SPLIT").is_ok() {
        // Where the time goes: the parse of each page, then the mapping of its records.
        let n = pages.len() * 200;
        let (mut scan, mut map) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for body in &pages {
            let t0 = std::time::Instant::now();
            let page = dealsync::zoho::parse_page("bench", 200, body).unwrap();
            let t1 = std::time::Instant::now();
            let mut mapper = Mapper::new(&stamp);
            for rec in page.records() {
                std::hint::black_box(mapper.map(&rec));
            }
            let t2 = std::time::Instant::now();
            drop(page);
            (scan, map) = (scan + (t1 - t0), map + (t2 - t1));
        }
        println!(
            "parse {:.2} us/deal, map {:.2} us/deal (wall)",
            scan.as_secs_f64() * 1e6 / n as f64,
            map.as_secs_f64() * 1e6 / n as f64
        );
    }
    let avg = bytes as f64 / (pages.len() * 200) as f64;
    // CPU-seconds per deal of each round.
    let mut per_deal: Vec<f64> = (0..rounds).map(|_| round(&pages, deals, &stamp)).collect();
    per_deal.sort_by(f64::total_cmp);
    let median = per_deal[per_deal.len() / 2];
    let (best, worst) = (per_deal[0], per_deal[per_deal.len() - 1]);
    println!(
        "parse+map: {deals} deals ({avg:.0} bytes and 60 fields each), median of {rounds} round{}: {:.0} deals per CPU-second ({:.0}–{:.0}), {:.2} us per deal ({:.2}–{:.2}), {:.0} MB/s",
        if rounds == 1 { "" } else { "s" },
        1.0 / median,
        1.0 / worst,
        1.0 / best,
        median * 1e6,
        best * 1e6,
        worst * 1e6,
        avg / median / 1e6
    );
}

/// Parses and maps `deals` deals from `pages` (over again as needed); the CPU-seconds per deal.
fn round(pages: &[String], deals: usize, stamp: &RunStamp) -> f64 {
    let (mut mapped, mut rows, mut cpu) = (0usize, 0usize, 0.0);
    while mapped < deals {
        let cpu0 = cpu_seconds();
        for body in pages.iter().take((deals - mapped).div_ceil(200)) {
            let page = dealsync::zoho::parse_page("bench", 200, body).unwrap();
            let mut mapper = Mapper::new(stamp);
            for rec in page.records() {
                if let Mapped::Row(r) = mapper.map(&rec) {
                    rows += 1;
                    std::hint::black_box(&r);
                }
                mapped += 1;
            }
        }
        cpu += cpu_seconds() - cpu0;
    }
    assert_eq!(rows, mapped, "every generated deal is closed won and well formed, so each must become a row");
    cpu / mapped as f64
}
