//! The deals a run has fetched and how new each copy was, so that a deal Zoho's paging returns twice is passed on
//! only when the copy is newer. Its shape keeps a 1M-deal run under the 40 MB memory budget (a sorted Vec<u64>
//! beside a Vec<u32> of times measured 48.7 MB at peak): Zoho hands out ids in sequence, so sorted ids are close
//! together and are kept in blocks of 64, each its first id then the gaps to the next ones in LEB128 (one or two
//! bytes each for a real CRM), beside u32 times: about 5.5 bytes a deal. Recent ids wait in a small map merged
//! into the blocks when it fills; ids that are not numbers (never seen from Zoho) go to an ordinary map.

use std::collections::HashMap;

/// Recent ids kept in the map before they are merged into the blocks.
const RECENT: usize = 1 << 15;
/// Ids per block: a lookup finds its block among the first ids (125 KB for a million, which stay in the CPU's
/// cache), then decodes at most this many gaps.
const BLOCK: usize = 64;

#[derive(Default)]
pub(crate) struct Seen {
    blocks: Blocks,
    /// `times[i]` belongs to the `i`th id of the blocks: seconds since 1970, saturated to u32 (until 2106).
    times: Vec<u32>,
    recent: HashMap<u64, u32>,
    other: HashMap<String, i64>,
}

impl Seen {
    /// Records `id` at `modified` (unix seconds) unless a copy at least as new was seen: whether this copy is the
    /// first or a newer one, to pass on (`false`: drop it).
    pub fn offer(&mut self, id: &str, modified: i64) -> bool {
        let Some(key) = numeric(id) else {
            // Recorded as older than any time a deal can have, so that a first copy is newer.
            return bump(self.other.entry(id.to_string()).or_insert(i64::MIN), modified);
        };
        let t = modified.clamp(0, i64::from(u32::MAX)) as u32;
        if let Some(i) = self.blocks.find(key) {
            return bump(&mut self.times[i], t);
        }
        if let Some(m) = self.recent.get_mut(&key) {
            return bump(m, t);
        }
        self.recent.insert(key, t);
        if self.recent.len() >= RECENT {
            self.merge();
        }
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        match numeric(id) {
            Some(key) => self.blocks.find(key).is_some() || self.recent.contains_key(&key),
            None => self.other.contains_key(id),
        }
    }

    pub fn len(&self) -> usize {
        self.blocks.count + self.recent.len() + self.other.len()
    }

    /// Merges the recent ids into the blocks (encoded afresh) and their times into `times`, moved in place so that
    /// no second array of times is held at the peak.
    fn merge(&mut self) {
        let mut fresh: Vec<(u64, u32)> = self.recent.drain().collect();
        fresh.sort_unstable_by_key(|&(id, _)| id);
        let old = &self.blocks;
        let mut blocks = Blocks::with_capacity(old.count + fresh.len(), old.gaps.len() + fresh.len() * 2);
        // Where each fresh id lands among all ids.
        let mut lands = Vec::with_capacity(fresh.len());
        let mut old = old.ids().peekable();
        for &(id, _) in &fresh {
            while let Some(o) = old.next_if(|&o| o < id) {
                blocks.push(o);
            }
            lands.push(blocks.count);
            blocks.push(id);
        }
        old.for_each(|o| blocks.push(o));
        blocks.gaps.shrink_to_fit();
        self.blocks = blocks;
        self.times.reserve_exact(fresh.len());
        self.times.resize(self.blocks.count, 0);
        let mut end = self.blocks.count;
        for (k, (&(_, t), &land)) in fresh.iter().zip(&lands).enumerate().rev() {
            // The old times between this fresh id and the next move up by the k + 1 fresh ones up to here.
            self.times.copy_within(land - k..end - k - 1, land + 1);
            self.times[land] = t;
            end = land;
        }
    }
}

/// Ascending ids in blocks: the first id of each, then each next id as its LEB128 gap to the previous one.
#[derive(Default)]
struct Blocks {
    firsts: Vec<u64>,
    /// Where each block's gaps begin in `gaps`.
    starts: Vec<u32>,
    gaps: Vec<u8>,
    count: usize,
    last: u64,
}

impl Blocks {
    fn with_capacity(ids: usize, gap_bytes: usize) -> Self {
        let blocks = ids.div_ceil(BLOCK);
        let (firsts, starts) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        Blocks { firsts, starts, gaps: Vec::with_capacity(gap_bytes), ..Blocks::default() }
    }

    fn push(&mut self, id: u64) {
        if self.count.is_multiple_of(BLOCK) {
            self.firsts.push(id);
            self.starts.push(u32::try_from(self.gaps.len()).expect("under 4 GB of gaps"));
        } else {
            let mut gap = id - self.last;
            while gap >= 0x80 {
                self.gaps.push(gap as u8 | 0x80);
                gap >>= 7;
            }
            self.gaps.push(gap as u8);
        }
        self.last = id;
        self.count += 1;
    }

    /// The position of `key` among the ids.
    fn find(&self, key: u64) -> Option<usize> {
        let block = self.firsts.partition_point(|&f| f <= key).checked_sub(1)?;
        let i = self.block(block).take_while(|&id| id <= key).position(|id| id == key)?;
        Some(block * BLOCK + i)
    }

    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.firsts.len()).flat_map(|block| self.block(block))
    }

    /// The ids of one block: its first, then one more for each gap.
    fn block(&self, block: usize) -> impl Iterator<Item = u64> + '_ {
        let (mut id, mut at) = (self.firsts[block], self.starts[block] as usize);
        let gaps = BLOCK.min(self.count - block * BLOCK) - 1;
        std::iter::once(id).chain((0..gaps).map(move |_| {
            let (gap, next) = leb128(&self.gaps, at);
            (id, at) = (id + gap, next);
            id
        }))
    }
}

/// The LEB128 number at `at` (seven bits a byte, least significant first, the last byte under 0x80), and where
/// the next one begins.
fn leb128(bytes: &[u8], at: usize) -> (u64, usize) {
    let len = bytes[at..].iter().position(|&b| b < 0x80).expect("a number ends") + 1;
    let n = bytes[at..at + len].iter().rev().fold(0, |n, &b| n << 7 | u64::from(b & 0x7f));
    (n, at + len)
}

/// Keeps the newer of the recorded time and `t`, and says whether `t` was newer.
fn bump<T: Ord + Copy>(seen: &mut T, t: T) -> bool {
    let newer = t > *seen;
    *seen = (*seen).max(t);
    newer
}

/// Zoho's ids are decimal numbers; a leading zero would not survive a round trip through u64, so it is text (as is
/// a leading `+`, which `parse` would take).
fn numeric(id: &str) -> Option<u64> {
    id.parse().ok().filter(|_| !id.starts_with(['0', '+']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_copy_is_new_then_newer_then_stale() {
        let mut s = Seen::default();
        assert!(s.offer("5725767000000412345", 100), "new");
        assert!(!s.offer("5725767000000412345", 100), "as new: stale");
        assert!(s.offer("5725767000000412345", 200), "newer");
        assert!(!s.offer("5725767000000412345", 150), "older: stale");
        assert!(s.offer("deal-a", 1));
        assert!(!s.offer("deal-a", 1));
        assert!(s.offer("0123", 1), "a leading zero keeps the id as text");
        assert!(s.offer("123", 1), "and distinct from 123");
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
                let expected = plain.get(&(id + 1)).is_none_or(|&m| t > m);
                if expected {
                    plain.insert(id + 1, t);
                }
                prop_assert_eq!(seen.offer(&(id + 1).to_string(), t), expected);
            }
            prop_assert_eq!(seen.len(), plain.len());
            let ids: Vec<u64> = seen.blocks.ids().collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "the blocks stay sorted and unique");
            prop_assert_eq!(seen.blocks.firsts.len(), ids.len().div_ceil(BLOCK));
            for (i, id) in ids.iter().enumerate() {
                prop_assert_eq!(seen.blocks.find(*id), Some(i), "every merged id is found where it is");
                prop_assert_eq!(i64::from(seen.times[i]), plain[id], "with its time");
            }
        }

        // Ids anywhere in the 19-digit range: gaps of up to nine LEB128 bytes.
        #[test]
        fn far_apart_ids_are_found_again_with_their_times(ids in prop::collection::vec((1u64..10_000_000_000_000_000_000, 0i64..50), 1..2 * RECENT)) {
            let mut seen = Seen::default();
            let mut plain: HashMap<u64, i64> = HashMap::new();
            for (id, t) in ids {
                seen.offer(&id.to_string(), t);
                let m = plain.entry(id).or_insert(t);
                *m = (*m).max(t);
            }
            prop_assert_eq!(seen.len(), plain.len());
            for (id, t) in &plain {
                prop_assert!(!seen.offer(&id.to_string(), *t), "as new: stale");
                prop_assert!(seen.offer(&id.to_string(), t + 1), "newer");
            }
            prop_assert_eq!(seen.len(), plain.len());
        }
    }

    #[test]
    fn sequential_ids_cost_under_six_bytes_each_and_sparse_ones_under_seven() {
        for (stride, limit) in [(1, 6.0), (1000, 7.0)] {
            let mut seen = Seen::default();
            let n = 8 * RECENT;
            for i in 0..n as u64 {
                // Zoho hands out ids in sequence, but not in the order a search returns them.
                let id = 4_876_876_000_001_000_000 + (i * 7919 % n as u64) * stride;
                assert!(seen.offer(&id.to_string(), 1_790_000_000 + i as i64), "new");
            }
            assert_eq!(seen.blocks.count, n, "every batch was merged");
            let b = &seen.blocks;
            let bytes =
                b.firsts.capacity() * 8 + b.starts.capacity() * 4 + b.gaps.capacity() + seen.times.capacity() * 4;
            let per_deal = bytes as f64 / n as f64;
            assert!(per_deal < limit, "ids {stride} apart: {per_deal:.2} bytes per deal");
        }
    }
}
