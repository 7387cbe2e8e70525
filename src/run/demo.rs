//! The built-in Zoho simulator as a product feature: `sync --demo`, `fields --demo` and `dealsync simulate`.
//! It is the one module that uses the simulator crate, and only in builds with the `sim` feature (the default);
//! a production build (`--no-default-features`) has none of it, and these commands then say so.

use super::error::RunError;
use crate::config::ZohoSettings;
use crate::exit::Exit;
use crate::window::Window;

#[cfg(feature = "sim")]
pub use with_sim::{simulate, Demo};

#[cfg(not(feature = "sim"))]
pub use without_sim::{simulate, Demo};

#[cfg(feature = "sim")]
mod with_sim {
    use std::net::SocketAddr;

    use chrono::{Duration, Utc};
    use dealsync_sim as sim;

    use super::*;
    use crate::config::cli::SimulateArgs;
    use crate::config::Settings;
    use crate::window::WindowField;

    /// A simulator running in this process for the length of a command: dropping it stops the simulator
    /// (`SimHandle`'s drop), so every way out of the command stops it.
    pub struct Demo {
        handle: sim::SimHandle,
    }

    impl Demo {
        /// Starts the simulator on a free loopback port with `deals` deals of the last 30 days, and the Zoho
        /// settings that point at it (its credentials; `ZOHO_MAX_CONCURRENCY` is still read).
        pub async fn start(deals: usize, seed: u64, max_concurrency: usize) -> Result<(Demo, ZohoSettings), RunError> {
            let cfg = sim::SimConfig::demo(deals, seed);
            let handle = sim::start(cfg.clone(), "127.0.0.1:0".parse().expect("valid address"))
                .await
                .map_err(RunError::DemoListen)?;
            tracing::info!(event = "demo_simulator", url = %handle.base_url(), deals, seed, anchor = %cfg.anchor.to_rfc3339(),
                "demo: built-in Zoho simulator started on loopback");
            let vars = vec![
                ("ZOHO_CLIENT_ID".to_string(), cfg.client_id.clone()),
                ("ZOHO_CLIENT_SECRET".to_string(), cfg.client_secret.clone()),
                ("ZOHO_REFRESH_TOKEN".to_string(), cfg.refresh_token.clone()),
                ("ZOHO_ACCOUNTS_URL".to_string(), handle.base_url()),
            ];
            let mut zoho =
                Settings::from_vars(vars, crate::config::Needs::ZohoCredentials)?.zoho.expect("credentials requested");
            zoho.max_concurrency = max_concurrency;
            Ok((Demo { handle }, zoho))
        }

        /// The closed-won deals the simulator holds in `window`.
        pub fn closed_won_in(&self, w: &Window) -> usize {
            let field = match w.field {
                WindowField::ModifiedTime => sim::DealField::ModifiedTime,
                WindowField::ClosingDate => sim::DealField::ClosingDate,
            };
            self.handle.closed_won_in(&sim::Range { field, start: w.start, end: w.end }).len()
        }
    }

    /// `dealsync simulate`: the simulator on its own, until Ctrl-C.
    pub async fn simulate(args: SimulateArgs) -> Exit {
        let cfg = match config_of(&args) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Usage;
            }
        };
        let handle = match sim::start(cfg.clone(), SocketAddr::new(args.host, args.port)).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(event = "simulator_failed", "could not listen on {}:{}: {e}", args.host, args.port);
                return Exit::Config;
            }
        };
        let all = sim::Range::modified((cfg.anchor - cfg.span).fixed_offset(), cfg.anchor.fixed_offset());
        let closed_won = handle.closed_won_in(&all);
        let (url, from) = (handle.base_url(), (cfg.anchor - cfg.span).to_rfc3339());
        let mut text = format!(
            "dealsync simulator on {url} with {} deals ({} closed won, seed {}), modified between {from} and {}\n\
             Point dealsync at it with:\n  export ZOHO_ACCOUNTS_URL={url} ZOHO_CLIENT_ID={} ZOHO_CLIENT_SECRET={} \
             ZOHO_REFRESH_TOKEN={}\n",
            cfg.deals,
            closed_won.len(),
            cfg.seed,
            cfg.anchor.to_rfc3339(),
            cfg.client_id,
            cfg.client_secret,
            cfg.refresh_token
        );
        let f = &cfg.faults;
        if !f.is_empty() {
            text += &format!("Injecting faults: {} planned, random rate {} (seed {}).\n", f.at.len(), f.rate, f.seed);
        }
        say(&(text + "Stop with Ctrl-C."));
        crate::shutdown::signal().await;
        let s = handle.stats();
        handle.stop().await;
        let (api, token, injected) = (s.api_requests, s.token_requests, s.faults_injected);
        say(&format!(
            "served {api} API requests, {token} token requests, {injected} faults injected {:?}",
            s.faults_by_kind
        ));
        Exit::Ok
    }

    /// Tells whoever reads stdout; a reader that stopped reading (a script that took the export line, `| head`)
    /// must not take the simulator down, so a failed write is ignored.
    fn say(text: &str) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{text}");
    }

    /// The simulator `simulate`'s flags describe, or what is wrong with them.
    fn config_of(args: &SimulateArgs) -> Result<sim::SimConfig, String> {
        let mut cfg = sim::SimConfig::demo(args.deals, args.seed);
        if let Some(anchor) = args.anchor {
            cfg.anchor = anchor.with_timezone(&Utc);
        }
        cfg.span = Duration::days(args.span_days.max(1));
        cfg.latency = std::time::Duration::from_millis(args.latency_ms);
        cfg.broken = args.broken;
        cfg.tz = args.tz_offset;
        cfg.mint_limit = args.mint_limit;
        cfg.token_ttl = std::time::Duration::from_secs(args.token_ttl_secs.max(1));
        if !(0.0..=1.0).contains(&args.fault_rate) {
            return Err("--fault-rate must be between 0 and 1".into());
        }
        let faults = args.faults.as_deref().map(sim::faults::FaultPlan::parse).transpose();
        let mut faults = faults.map_err(|e| format!("--faults: {e}"))?.unwrap_or_default();
        faults.rate = args.fault_rate;
        faults.seed = args.fault_seed;
        faults.slow = std::time::Duration::from_millis(args.fault_slow_ms);
        cfg.faults = faults;
        cfg.won_share = args.won_share.clamp(0.0, 1.0);
        cfg.not_modified = !args.no_304;
        cfg.ignores_sort = args.ignore_sort;
        cfg.shuffled_ties = args.shuffle_ties;
        cfg.search_lag = std::time::Duration::from_secs(args.index_lag_secs);
        cfg.awaiting_approval = args.awaiting_approval;
        cfg.edits_per_second = args.edits_per_second;
        Ok(cfg)
    }
}

#[cfg(not(feature = "sim"))]
mod without_sim {
    use super::*;
    use crate::config::cli::SimulateArgs;

    const NOT_BUILT: &str = "this dealsync was built without the simulator (the `sim` feature): --demo and `dealsync simulate` need the default build";

    /// Never built: this dealsync has no simulator.
    pub enum Demo {}

    impl Demo {
        pub async fn start(_: usize, _: u64, _: usize) -> Result<(Demo, ZohoSettings), RunError> {
            Err(RunError::Usage(NOT_BUILT.into()))
        }

        pub fn closed_won_in(&self, _: &Window) -> usize {
            match *self {}
        }
    }

    pub async fn simulate(_args: SimulateArgs) -> Exit {
        eprintln!("error: {NOT_BUILT}");
        Exit::Usage
    }
}
