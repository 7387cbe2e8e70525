//! Fault injection for the simulator: the Nth API request gets a given fault once
//! (`429@3,500@5,reset@7,slow@9:3000,expire@11,badjson@13,trunc@15`), and/or every request gets a random
//! fault with probability P from a seeded generator, so that a failing run can be replayed exactly.

use std::collections::HashMap;
use std::time::Duration;

use super::data::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 TOO_MANY_REQUESTS with `Retry-After: 1`.
    TooManyRequests,
    /// 500 INTERNAL_ERROR.
    Internal,
    /// The connection breaks after the headers: the body never completes.
    Reset,
    /// The answer comes after this delay.
    Slow(Duration),
    /// The access token presented is revoked just before the request is served (401 INVALID_TOKEN).
    Expire,
    /// A 200 whose body is an HTML error page.
    BadJson,
    /// A 200 whose JSON body is cut in half.
    Truncated,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::TooManyRequests => "429",
            Fault::Internal => "500",
            Fault::Reset => "reset",
            Fault::Slow(_) => "slow",
            Fault::Expire => "expire",
            Fault::BadJson => "badjson",
            Fault::Truncated => "trunc",
        }
    }
}

/// Which requests fail, and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// 1-based API request number → fault.
    pub at: HashMap<u64, Fault>,
    /// Probability of a random fault on any other request.
    pub rate: f64,
    pub seed: u64,
    /// Delay of random `slow` faults.
    pub slow: Duration,
}

impl FaultPlan {
    /// Parses `429@3,500@5,reset@7,slow@9:3000,expire@11,badjson@13,trunc@15`.
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut plan = FaultPlan { slow: Duration::from_millis(1500), ..FaultPlan::default() };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, rest) = item.split_once('@').ok_or_else(|| format!("`{item}` is not FAULT@N"))?;
            let (n, arg) = match rest.split_once(':') {
                Some((n, a)) => (n, Some(a)),
                None => (rest, None),
            };
            let n: u64 = n.parse().map_err(|_| format!("`{item}`: {n} is not a request number"))?;
            let fault = match (kind, arg) {
                ("429", None) => Fault::TooManyRequests,
                ("500", None) => Fault::Internal,
                ("reset", None) => Fault::Reset,
                ("slow", Some(ms)) => Fault::Slow(Duration::from_millis(
                    ms.parse().map_err(|_| format!("`{item}`: {ms} is not milliseconds"))?,
                )),
                ("slow", None) => Fault::Slow(Duration::from_millis(3000)),
                ("expire", None) => Fault::Expire,
                ("badjson", None) => Fault::BadJson,
                ("trunc", None) => Fault::Truncated,
                _ => {
                    return Err(format!("`{item}`: unknown fault (429, 500, reset, slow[:ms], expire, badjson, trunc)"))
                }
            };
            plan.at.insert(n, fault);
        }
        Ok(plan)
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty() && self.rate <= 0.0
    }

    /// The fault for API request `n`, if any. Deterministic in (seed, n).
    pub fn fault_for(&self, n: u64) -> Option<Fault> {
        if let Some(f) = self.at.get(&n) {
            return Some(*f);
        }
        if self.rate <= 0.0 {
            return None;
        }
        let mut rng = Rng::new(self.seed.wrapping_mul(0x100_0000_01B3) ^ n);
        if !rng.chance(self.rate) {
            return None;
        }
        Some(match rng.below(7) {
            0 => Fault::TooManyRequests,
            1 => Fault::Internal,
            2 => Fault::Reset,
            3 => Fault::Slow(self.slow),
            4 => Fault::Expire,
            5 => Fault::BadJson,
            _ => Fault::Truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_spec() {
        let p = FaultPlan::parse("429@3,500@5,reset@7,slow@9:3000,expire@11,badjson@13,trunc@15").unwrap();
        assert_eq!(p.fault_for(3), Some(Fault::TooManyRequests));
        assert_eq!(p.fault_for(9), Some(Fault::Slow(Duration::from_secs(3))));
        assert_eq!(p.fault_for(15), Some(Fault::Truncated));
        assert_eq!(p.fault_for(4), None);
        assert!(FaultPlan::parse("boom@1").is_err());
        assert!(FaultPlan::parse("429").is_err());
    }

    #[test]
    fn random_faults_follow_the_rate_and_the_seed() {
        let p = FaultPlan { rate: 0.2, seed: 7, ..FaultPlan::default() };
        let hits = (1..=10_000).filter(|n| p.fault_for(*n).is_some()).count();
        assert!((1700..2300).contains(&hits), "{hits}");
        let again: Vec<_> = (1..=100).map(|n| p.fault_for(n)).collect();
        assert_eq!(again, (1..=100).map(|n| p.fault_for(n)).collect::<Vec<_>>());
    }
}
