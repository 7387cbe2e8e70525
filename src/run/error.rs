//! Why a run stopped early, and the exit each reason means: one type for every phase and for the commands that
//! share them (`check`, `verify`).

use crate::config::ConfigError;
use crate::exit::Exit;
use crate::sink::SinkError;
use crate::zoho::ZohoError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zoho(#[from] ZohoError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Demo(super::demo::DemoError),
    #[error("stopped by {0}")]
    Interrupted(String),
    #[error("the warehouse does not hold every closed-won deal Zoho has in this window (see the incomplete and reconciliation events)")]
    Mismatch,
}

impl RunError {
    pub fn exit(&self) -> Exit {
        match self {
            RunError::Config(_) => Exit::Config,
            RunError::Zoho(e) => e.exit(),
            RunError::Sink(e) => e.exit,
            RunError::Usage(_) => Exit::Usage,
            RunError::Demo(e) => e.exit(),
            RunError::Interrupted(_) => Exit::Interrupted,
            RunError::Mismatch => Exit::Partial,
        }
    }
}
