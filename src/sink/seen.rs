//! The deals an export already wrote in this run, and how new each copy was: what lets the NDJSON sink drop a
//! deal that Zoho's paging returns twice without ever rewriting a file.
//!
//! A hash map of a million ids costs about 34 MB (and twice that while it grows). Zoho ids are numbers, so this
//! keeps them in a sorted array of u64 beside an array of u32 modification times (12 bytes per deal, 12 MB at a
//! million), with recent ids in a small map that is merged into the arrays, in place, when it fills. Ids that
//! are not numbers (never seen from Zoho) go to an ordinary map.

use std::collections::HashMap;

/// Recent ids kept in the map before they are merged into the sorted arrays.
const RECENT: usize = 1 << 15;
/// Ids per fence (64 ids: 512 bytes, eight cache lines).
const BLOCK: usize = 64;

#[derive(Default)]
pub struct Seen {
    ids: Vec<u64>,
    /// `times[i]` belongs to `ids[i]`: seconds since 1970, saturated to u32 (until 2106).
    times: Vec<u32>,
    /// Every `BLOCK`th id: a search narrows to one block here (a million ids give 125 KB of fences, which stay
    /// in the CPU's cache), then reads one block of `ids`. A plain binary search over `ids` missed the cache at
    /// nearly every step and took a tenth of the NDJSON sink's time.
    fences: Vec<u64>,
    recent: HashMap<u64, u32, IdHash>,
    other: HashMap<String, i64>,
}

/// What `Seen::offer` decided about a copy of a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// First copy in this run.
    New,
    /// Newer than the copy already written.
    Newer,
    /// As new as, or older than, the copy already written: drop it.
    Stale,
}

impl Seen {
    /// Records `id` at `modified` (unix seconds) unless a copy at least as new was seen, and says which.
    pub fn offer(&mut self, id: &str, modified: i64) -> Offer {
        let Some(key) = numeric(id) else {
            if let Some(m) = self.other.get_mut(id) {
                return bump(m, modified);
            }
            self.other.insert(id.to_string(), modified);
            return Offer::New;
        };
        let t = modified.clamp(0, i64::from(u32::MAX)) as u32;
        if let Some(i) = self.find(key) {
            return bump(&mut self.times[i], t);
        }
        if let Some(m) = self.recent.get_mut(&key) {
            return bump(m, t);
        }
        self.recent.insert(key, t);
        if self.recent.len() >= RECENT {
            self.merge();
        }
        Offer::New
    }

    /// Deals recorded so far.
    pub fn len(&self) -> usize {
        self.ids.len() + self.recent.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where `key` is in `ids`.
    fn find(&self, key: u64) -> Option<usize> {
        let block = self.fences.partition_point(|&f| f <= key).checked_sub(1)?;
        let start = block * BLOCK;
        let end = (start + BLOCK).min(self.ids.len());
        self.ids[start..end].binary_search(&key).ok().map(|i| start + i)
    }

    /// Moves the recent ids into the sorted arrays: grows them in place and merges from the back.
    fn merge(&mut self) {
        let mut fresh: Vec<(u64, u32)> = self.recent.drain().collect();
        fresh.sort_unstable_by_key(|&(id, _)| id);
        let (old, add) = (self.ids.len(), fresh.len());
        self.ids.reserve_exact(add);
        self.times.reserve_exact(add);
        self.ids.resize(old + add, 0);
        self.times.resize(old + add, 0);
        let (mut i, mut j, mut k) = (old, add, old + add);
        while j > 0 {
            k -= 1;
            if i > 0 && self.ids[i - 1] > fresh[j - 1].0 {
                i -= 1;
                self.ids[k] = self.ids[i];
                self.times[k] = self.times[i];
            } else {
                j -= 1;
                (self.ids[k], self.times[k]) = fresh[j];
            }
        }
        // Keep the map's memory for the next batch of ids, but not more than one batch needs.
        self.recent.shrink_to(RECENT);
        self.fences.clear();
        self.fences.extend(self.ids.iter().step_by(BLOCK));
    }
}

/// Hashes an id with one multiply instead of SipHash (a tenth of the NDJSON sink's time was spent here): the
/// ids come from the CRM, not from whoever could aim collisions at the map, and the map never holds more than
/// `RECENT` of them.
#[derive(Default, Clone, Copy)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Mixes the high bits down before the multiply spreads every bit up: the map picks a bucket with the
        // low bits of the hash and a tag with the top seven.
        let h = (self.0 ^ n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Keeps the newer of the recorded time and `t`, and says whether `t` was newer.
fn bump<T: Ord + Copy>(seen: &mut T, t: T) -> Offer {
    if *seen >= t {
        Offer::Stale
    } else {
        *seen = t;
        Offer::Newer
    }
}

/// Zoho's ids are decimal numbers; a leading zero would not survive a round trip through u64, so it is text.
fn numeric(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > 19 || id.starts_with('0') || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_copy_is_new_then_newer_then_stale() {
        let mut s = Seen::default();
        assert_eq!(s.offer("5725767000000412345", 100), Offer::New);
        assert_eq!(s.offer("5725767000000412345", 100), Offer::Stale);
        assert_eq!(s.offer("5725767000000412345", 200), Offer::Newer);
        assert_eq!(s.offer("5725767000000412345", 150), Offer::Stale);
        assert_eq!(s.offer("deal-a", 1), Offer::New);
        assert_eq!(s.offer("deal-a", 1), Offer::Stale);
        assert_eq!(s.offer("0123", 1), Offer::New, "a leading zero keeps the id as text");
        assert_eq!(s.offer("123", 1), Offer::New, "and distinct from 123");
        assert_eq!(s.len(), 4);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        // Many ids force several merges; every decision must match a plain map's.
        #[test]
        fn decisions_match_a_plain_map(ops in prop::collection::vec((0u64..3 * RECENT as u64, 0i64..50), 1..6 * RECENT)) {
            let mut seen = Seen::default();
            let mut plain: HashMap<u64, i64> = HashMap::new();
            for (id, t) in ops {
                let expected = match plain.get(&(id + 1)) {
                    None => Offer::New,
                    Some(&m) if m >= t => Offer::Stale,
                    Some(_) => Offer::Newer,
                };
                if expected != Offer::Stale {
                    plain.insert(id + 1, t);
                }
                prop_assert_eq!(seen.offer(&(id + 1).to_string(), t), expected);
            }
            prop_assert_eq!(seen.len(), plain.len());
            prop_assert!(seen.ids.windows(2).all(|w| w[0] < w[1]), "the arrays stay sorted and unique");
            prop_assert_eq!(seen.fences.len(), seen.ids.len().div_ceil(BLOCK));
            for (i, id) in seen.ids.iter().enumerate() {
                prop_assert_eq!(seen.find(*id), Some(i), "every merged id is found where it is");
            }
        }
    }
}
