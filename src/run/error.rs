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
    #[error("the demo simulator could not listen on 127.0.0.1: {0}")]
    DemoListen(std::io::Error),
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
            RunError::DemoListen(_) => Exit::Internal,
            RunError::Interrupted(_) => Exit::Interrupted,
            RunError::Mismatch => Exit::Partial,
        }
    }
}
