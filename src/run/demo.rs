//! The built-in Zoho simulator as a product feature: `sync --demo`, `fields --demo` and `dealsync simulate`.
//! It is the one module that runs the simulator crate (`config/cli.rs` mounts its flags), and only in builds with
//! the `sim` feature (the default);
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
    use dealsync_sim as sim;

    use super::*;
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
    pub async fn simulate(args: sim::cli::SimArgs) -> Exit {
        match sim::cli::serve(&args, crate::shutdown::signal()).await {
            Ok(()) => Exit::Ok,
            Err(sim::cli::Failed::Flags(e)) => {
                eprintln!("error: {e}");
                Exit::Usage
            }
            Err(sim::cli::Failed::Listen(e)) => {
                tracing::error!(event = "simulator_failed", "could not listen on {e}");
                Exit::Config
            }
        }
    }
}

#[cfg(not(feature = "sim"))]
mod without_sim {
    use super::*;

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

    pub async fn simulate() -> Exit {
        eprintln!("error: {NOT_BUILT}");
        Exit::Usage
    }
}
