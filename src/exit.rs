//! The process exit codes, in one place, so that every layer reports failures the same way and the README,
//! the Kubernetes `podFailurePolicy` and the tests agree on what each number means.

/// What a run (or a sub-command) ended with, from the scheduler's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Exit {
    /// Every page fetched and every row written.
    Ok,
    /// A bug or an unexpected local failure (disk full, corrupt local database). The default: a run's summary
    /// says it failed until the run decides otherwise.
    #[default]
    Internal,
    /// The command line was wrong.
    Usage,
    /// The run finished, but some records were quarantined instead of written.
    Partial,
    /// Zoho or the warehouse stayed unavailable after retries, or the run was interrupted: safe to retry later.
    Unavailable,
    /// Configuration or credentials are wrong: retrying will not help until someone fixes them.
    Config,
    /// Stopped by SIGTERM/SIGINT or the run deadline before the window was complete: safe to run again.
    Interrupted,
}

impl Exit {
    /// The process exit code, and a short word for logs and the run ledger.
    const fn parts(self) -> (u8, &'static str) {
        match self {
            Exit::Ok => (0, "success"),
            Exit::Internal => (1, "internal_error"),
            Exit::Usage => (2, "usage_error"),
            Exit::Partial => (3, "partial"),
            Exit::Unavailable => (75, "unavailable"),
            Exit::Config => (78, "config_error"),
            Exit::Interrupted => (75, "interrupted"),
        }
    }

    pub const fn code(self) -> u8 {
        self.parts().0
    }

    pub const fn outcome(self) -> &'static str {
        self.parts().1
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
