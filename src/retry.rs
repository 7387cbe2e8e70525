//! Every wait-and-try-again goes through here, on backon's exponential schedule: retries of failed requests,
//! waiting out a throttle, polling a job. *Which* errors are worth a retry is decided by each client, which
//! knows its protocol, and passed in as a predicate; this module only owns the timing.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

/// How hard to try before giving up: waits growing exponentially from `min_delay` up to `max_delay` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts, the first included.
    pub max_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The sum of all waits never exceeds this.
    pub deadline: Duration,
}

impl RetryPolicy {
    fn backoff(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_total_delay(Some(self.deadline))
    }
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

/// The last error of a request that was retried until the budget ran out, or that was not worth a retry.
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: usize,
    pub elapsed: Duration,
}

/// Runs `op` again, after the policy's next wait (no jitter), while `when` says its error is worth it; `notify`
/// hears of each wait. For waits with their own rules (a throttle, a refused token); [`retry`] is the usual one.
pub async fn again<T, E, Fut: Future<Output = Result<T, E>>>(
    policy: RetryPolicy,
    op: impl FnMut() -> Fut,
    when: impl FnMut(&E) -> bool,
    notify: impl FnMut(&E, Duration),
) -> Result<T, E> {
    op.retry(policy.backoff()).sleep(tokio::time::sleep).when(when).notify(notify).await
}

/// Looks at something (a BigQuery job) until it is done (`Some`) or failed, waiting from `first` up to `cap`
/// between looks as [`again`] does; after `limit` in all, fails with `timed_out()`.
pub async fn poll<T, E, Fut: Future<Output = Result<Option<T>, E>>>(
    first: Duration,
    cap: Duration,
    limit: Duration,
    mut look: impl FnMut() -> Fut,
    timed_out: impl FnOnce() -> E,
) -> Result<T, E> {
    let policy = RetryPolicy { max_attempts: usize::MAX, min_delay: first, max_delay: cap, deadline: Duration::MAX };
    // The error `None` is "not done yet": look again.
    let once = || {
        let looked = look();
        async move { looked.await.map_err(Some)?.ok_or(None) }
    };
    let looked = tokio::time::timeout(limit, again(policy, once, Option::is_none, |_, _| {})).await;
    looked.unwrap_or(Err(None)).map_err(|e| e.unwrap_or_else(timed_out))
}

/// Runs `op` until it succeeds, fails with an error `when` does not call worth a retry, or the policy is
/// spent. `asked` is the delay the server asked for in an error, if any; `on_retry` is called once per retry
/// (for counters), and each retry also logs one `warn` event.
pub async fn retry<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    policy: RetryPolicy,
    what: &str,
    op: impl FnMut() -> Fut,
    when: impl Fn(&E) -> bool,
    asked: impl Fn(&E) -> Option<Duration>,
    on_retry: impl Fn(),
) -> Result<T, GaveUp<E>> {
    let (started, mut attempts) = (Instant::now(), 1);
    op.retry(policy.backoff().with_jitter())
        .sleep(tokio::time::sleep)
        .when(when)
        .adjust(|e, d| d.map(|d| asked(e).map_or(d, |ra| ra.clamp(d, policy.deadline.max(d)))))
        .notify(|e, delay| {
            on_retry();
            let delay_ms = delay.as_millis() as u64;
            tracing::warn!(event = "retry", attempt = attempts, delay_ms, reason = %e, "retrying {what}");
            attempts += 1;
        })
        .await
        .map_err(|error| GaveUp { error, attempts, elapsed: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_poll_returns_what_the_job_gives_once_done() {
        let mut looks = 0;
        let r: Result<u32, &str> = poll(
            Duration::from_millis(200),
            Duration::from_secs(5),
            Duration::from_secs(60),
            || {
                looks += 1;
                let n = looks;
                async move { Ok((n >= 4).then_some(n)) }
            },
            || "timed out",
        )
        .await;
        assert_eq!(r, Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_gives_up_after_its_limit_and_stops_at_a_failure() {
        let started = tokio::time::Instant::now();
        let mut looks = 0;
        let r: Result<(), &str> = poll(
            Duration::from_millis(200),
            Duration::from_secs(5),
            Duration::from_secs(60),
            || {
                looks += 1;
                async { Ok(None) }
            },
            || "timed out",
        )
        .await;
        assert_eq!(r, Err("timed out"));
        assert!(started.elapsed() >= Duration::from_secs(60) && started.elapsed() < Duration::from_secs(66));
        assert!((12..=20).contains(&looks), "waits grow from 200 ms to 5 s: {looks} looks");
        let mut looks = 0;
        let r: Result<(), &str> = poll(
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(60),
            || {
                looks += 1;
                async { Err("boom") }
            },
            || "timed out",
        )
        .await;
        assert_eq!((r, looks), (Err("boom"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_where_the_predicate_says_and_waits_as_long_as_the_server_asks() {
        let policy = RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
        };
        let r: Result<(), GaveUp<&str>> =
            retry(policy, "t", || async { Err("fatal") }, |e| *e != "fatal", |_| None, || {}).await;
        assert!(matches!(r, Err(GaveUp { error: "fatal", attempts: 1, .. })));

        let (started, retries) = (tokio::time::Instant::now(), std::cell::Cell::new(0));
        let asked = |_: &&str| Some(Duration::from_secs(10));
        let r: Result<(), GaveUp<&str>> =
            retry(policy, "t", || async { Err("busy") }, |_| true, asked, || retries.set(retries.get() + 1)).await;
        assert!(matches!(r, Err(GaveUp { error: "busy", attempts: 4, .. })));
        assert_eq!(retries.get(), 3);
        assert!(started.elapsed() >= Duration::from_secs(30), "three waits of the 10 s asked for");
    }

    #[tokio::test(start_paused = true)]
    async fn again_waits_on_its_policy_and_stops_when_the_total_is_spent() {
        let policy = RetryPolicy {
            max_attempts: usize::MAX,
            min_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(300),
            deadline: Duration::from_secs(100),
        };
        let mut waits = Vec::new();
        let r: Result<(), &str> = again(policy, || async { Err("throttled") }, |_| true, |_, d| waits.push(d)).await;
        assert_eq!(r, Err("throttled"));
        assert_eq!(waits, [Duration::from_secs(30), Duration::from_secs(60)], "a third wait would pass 100 s");
    }
}
