//! A run-wide stop signal: SIGTERM/SIGINT (Kubernetes and Cloud Run send SIGTERM before killing a job) or the
//! run deadline. Fetching stops at once (Zoho reads are safe to abandon); a write in progress finishes, so the
//! warehouse never holds half a batch.

use std::sync::Arc;

use tokio::sync::watch;

/// Why the run was asked to stop, once it was; clones share it.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<watch::Sender<Option<String>>>);

impl Shutdown {
    /// Asks everything to stop; the first reason given is kept.
    pub fn trigger(&self, reason: impl Into<String>) {
        self.0.send_if_modified(|r| {
            let first = r.is_none();
            r.get_or_insert(reason.into());
            first
        });
    }

    pub fn reason(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    pub async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(Option::is_some).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
