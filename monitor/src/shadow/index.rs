//! A hash map from `u64` keys to `u32` values with a capacity fixed at creation: it is
//! allocated once and never grows, so that the mirror record never allocates while the guest
//! runs. Linear probing with backward-shift deletion (no tombstones: a lookup stops at the
//! first empty slot however many removals came before). Keys are stored plus one so that an
//! empty table is all zeroes, which the host commits only as it is touched.

const EMPTY: u64 = 0;

#[derive(Debug)]
pub(super) struct FixedMap {
    keys: Box<[u64]>,
    vals: Box<[u32]>,
    mask: usize,
    len: usize,
    limit: usize,
}

impl FixedMap {
    /// A map for at most `capacity` keys (the table is twice that, rounded to a power of two,
    /// so that probe runs stay short). Keys must not be `u64::MAX`.
    pub fn new(capacity: usize) -> Self {
        let size = (capacity.max(1) * 2).next_power_of_two();
        FixedMap {
            keys: vec![0; size].into_boxed_slice(),
            vals: vec![0; size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
            limit: capacity.max(1),
        }
    }

    fn home(&self, key: u64) -> usize {
        // Fibonacci hashing: neighbouring page numbers land far apart.
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask
    }

    fn find(&self, key: u64) -> Option<usize> {
        let key = stored(key);
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                k if k == key => return Some(i),
                EMPTY => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    pub fn get(&self, key: u64) -> Option<u32> {
        self.find(key).map(|i| self.vals[i])
    }

    /// Sets `key` to `val`. `Err(())` when the key is new and the map is at its capacity.
    pub fn insert(&mut self, key: u64, val: u32) -> Result<(), ()> {
        let key = stored(key);
        let mut i = self.home(key);
        loop {
            if self.keys[i] == key {
                self.vals[i] = val;
                return Ok(());
            }
            if self.keys[i] == EMPTY {
                if self.len == self.limit {
                    return Err(());
                }
                self.keys[i] = key;
                self.vals[i] = val;
                self.len += 1;
                return Ok(());
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: u64) -> Option<u32> {
        let mut hole = self.find(key)?;
        let val = self.vals[hole];
        // Shift back every later entry of the run that may sit in the hole (its home is not
        // cyclically inside (hole, j]), so that no lookup meets an empty slot too early.
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let k = self.keys[j];
            if k == EMPTY {
                break;
            }
            let h = self.home(k);
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                self.keys[hole] = k;
                self.vals[hole] = self.vals[j];
                hole = j;
            }
        }
        self.keys[hole] = EMPTY;
        self.len -= 1;
        Some(val)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether a new key would be refused.
    pub fn is_full(&self) -> bool {
        self.len == self.limit
    }

    /// Empties the map: O(table size), for the rare full flush of a map whose keys are not
    /// listed elsewhere.
    pub fn clear(&mut self) {
        if self.len != 0 {
            self.keys.fill(EMPTY);
            self.len = 0;
        }
    }
}

fn stored(key: u64) -> u64 {
    debug_assert_ne!(key, u64::MAX);
    key + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_hash_map_through_inserts_and_removals() {
        // Small table, clustered keys (consecutive and colliding), many removals: the
        // backward shift is what is tested.
        let mut m = FixedMap::new(64);
        let mut r: HashMap<u64, u32> = HashMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 160 + if x & 1 == 0 { 0 } else { 1 << 40 };
            if x & 0x300 == 0 {
                assert_eq!(m.remove(key), r.remove(&key), "step {step}");
            } else if r.len() < 64 || r.contains_key(&key) {
                m.insert(key, step).unwrap();
                r.insert(key, step);
            } else {
                assert_eq!(m.insert(key, step), Err(()), "full at 64");
            }
            assert_eq!(m.len(), r.len());
            for k in [key, key ^ 1, key + 1] {
                assert_eq!(m.get(k), r.get(&k).copied(), "step {step} key {k:#x}");
            }
        }
        for (k, v) in &r {
            assert_eq!(m.get(*k), Some(*v));
        }
        m.clear();
        assert_eq!((m.len(), m.get(*r.keys().next().unwrap())), (0, None));
    }
}
