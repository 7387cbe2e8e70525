//! The backoff mechanism shared by the Zoho client and the BigQuery sink: jittered exponential delays,
//! bounded attempts and a bounded total wait, an optional server-requested delay, and one `warn` event per
//! retry. *Which* errors are worth a retry is decided by each client, which knows its protocol.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

/// How hard to try before giving up on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The sum of all waits for one request never exceeds this.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

/// How an error behaves under retry.
pub trait Retry: std::fmt::Display {
    fn is_retryable(&self) -> bool;
    /// A delay the server asked for, if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// The last error of a request that was retried until the budget ran out, or that was not worth a retry.
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: usize,
    pub elapsed: Duration,
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or the policy is spent.
/// `on_retry` is called once per retry (for counters); each retry also logs one `warn` event.
pub async fn retry<T, E, F, Fut>(policy: RetryPolicy, what: &str, mut op: F, on_retry: impl Fn()) -> Result<T, GaveUp<E>>
where
    E: Retry,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let attempts = AtomicUsize::new(0);
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_attempts.saturating_sub(1))
        .with_total_delay(Some(policy.deadline));
    (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        op()
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(E::is_retryable)
    .adjust(|e, d| d.map(|d| e.retry_after().map_or(d, |ra| ra.clamp(d, policy.deadline.max(d)))))
    .notify(|e, delay| {
        on_retry();
        tracing::warn!(
            event = "retry",
            attempt = attempts.load(Ordering::Relaxed),
            delay_ms = delay.as_millis() as u64,
            reason = %e,
            "retrying {what}"
        );
    })
    .await
    .map_err(|error| GaveUp { error, attempts: attempts.load(Ordering::Relaxed), elapsed: started.elapsed() })
}
