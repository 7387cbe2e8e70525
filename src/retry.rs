//! Every wait-and-try-again in dealsync goes through here: retries of failed requests (jittered exponential
//! delays, bounded attempts and total wait, an optional server-requested delay, one `warn` event per retry),
//! waiting out a throttle, and polling a job until it is done. *Which* errors are worth a retry is decided by
//! each client, which knows its protocol; this module only owns the timing.

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

/// A schedule of waits between attempts: exponential from `first`, each at most `cap`, `total` at most in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub first: Duration,
    pub cap: Duration,
    pub total: Option<Duration>,
    pub times: usize,
    pub jitter: bool,
}

impl Schedule {
    fn backoff(self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.cap)
            .with_max_times(self.times)
            .with_total_delay(self.total);
        if self.jitter {
            b.with_jitter()
        } else {
            b
        }
    }
}

/// Runs `op` again, after the schedule's next wait, while `when` says its error is worth it; `notify` hears of
/// each wait. The building block of [`retry`] and [`poll`], and of waits with their own rules (a throttle).
pub async fn again<T, E, F, Fut>(
    schedule: Schedule,
    op: F,
    when: impl FnMut(&E) -> bool,
    notify: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    op.retry(schedule.backoff()).sleep(tokio::time::sleep).when(when).notify(notify).await
}

/// What one look at a job found: done, not yet, or failed.
pub enum Poll<T, E> {
    Done(T),
    Pending,
    Failed(E),
}

/// Why polling stopped without a result.
#[derive(Debug)]
pub enum PollError<E> {
    Failed(E),
    /// Still pending after `limit`.
    TimedOut,
}

/// Looks at something (a BigQuery job) until it is done or failed, waiting from `first` up to `cap` between
/// looks, for `limit` at most in all (a look that long-polls on the server may use no wait at all).
pub async fn poll<T, E, F, Fut>(first: Duration, cap: Duration, limit: Duration, mut look: F) -> Result<T, PollError<E>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Poll<T, E>>,
{
    let schedule = Schedule { first, cap, total: None, times: usize::MAX, jitter: false };
    let op = || {
        let f = look();
        async move {
            match f.await {
                Poll::Done(t) => Ok(t),
                Poll::Pending => Err(PollError::TimedOut),
                Poll::Failed(e) => Err(PollError::Failed(e)),
            }
        }
    };
    let polling = again(schedule, op, |e| matches!(e, PollError::TimedOut), |_, _| {});
    match tokio::time::timeout(limit, polling).await {
        Ok(r) => r,
        Err(_) => Err(PollError::TimedOut),
    }
}

/// Runs `op` until it succeeds, fails with an error that is not retryable, or the policy is spent.
/// `on_retry` is called once per retry (for counters); each retry also logs one `warn` event.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut op: F,
    on_retry: impl Fn(),
) -> Result<T, GaveUp<E>>
where
    E: Retry,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let attempts = AtomicUsize::new(0);
    let schedule = Schedule {
        first: policy.min_delay,
        cap: policy.max_delay,
        total: Some(policy.deadline),
        times: policy.max_attempts.saturating_sub(1),
        jitter: true,
    };
    (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        op()
    })
    .retry(schedule.backoff())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_poll_returns_what_the_job_gives_once_done() {
        let mut looks = 0;
        let r: Result<u32, PollError<String>> =
            poll(Duration::from_millis(200), Duration::from_secs(5), Duration::from_secs(60), || {
                looks += 1;
                let n = looks;
                async move {
                    if n < 4 {
                        Poll::Pending
                    } else {
                        Poll::Done(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_gives_up_after_its_limit_and_stops_at_a_failure() {
        let started = tokio::time::Instant::now();
        let r: Result<(), PollError<String>> =
            poll(Duration::from_millis(200), Duration::from_secs(5), Duration::from_secs(60), || async {
                Poll::Pending
            })
            .await;
        assert!(matches!(r, Err(PollError::TimedOut)));
        assert!(started.elapsed() >= Duration::from_secs(60) && started.elapsed() < Duration::from_secs(66));
        let r: Result<(), PollError<&str>> =
            poll(Duration::ZERO, Duration::ZERO, Duration::from_secs(60), || async { Poll::Failed("boom") }).await;
        assert!(matches!(r, Err(PollError::Failed("boom"))));
    }

    #[tokio::test(start_paused = true)]
    async fn again_waits_on_its_schedule_and_stops_when_the_total_is_spent() {
        let schedule = Schedule {
            first: Duration::from_secs(30),
            cap: Duration::from_secs(300),
            total: Some(Duration::from_secs(100)),
            times: usize::MAX,
            jitter: false,
        };
        let mut waits = Vec::new();
        let r: Result<(), &str> = again(schedule, || async { Err("throttled") }, |_| true, |_, d| waits.push(d)).await;
        assert_eq!(r, Err("throttled"));
        assert_eq!(waits, [Duration::from_secs(30), Duration::from_secs(60)], "a third wait would pass 100 s");
    }
}
