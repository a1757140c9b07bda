//! numpy's legacy global generator (`np.random.seed(s)`, `np.random.randint`, `np.random.shuffle`,
//! `np.random.permutation`), draw for draw.
//!
//! Why a module of our own: the reference builders (HRM/TRM `build_arc_dataset.py`) draw every
//! random choice from numpy's legacy `RandomState`, and reproducing their datasets array for array
//! needs the same stream. The Mersenne Twister itself is on crates.io, but nothing there
//! reproduces numpy's legacy layer on top of it: integer seeding through `init_genrand`, the
//! bounded integers of `randint` (mask-and-reject on 32-bit draws, no draw at all for a range of
//! one value) and the Fisher–Yates `shuffle` from the end with `random_interval`.
//!
//! Mirrors numpy's `mt19937.c` (`mt19937_seed`, `mt19937_next32`), `distributions.c`
//! (`random_interval`, `random_bounded_uint64_fill` with `use_masked`, `random_standard_uniform`
//! via `legacy_double`) and `mtrand.pyx` (`shuffle`, `permutation`).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's legacy `RandomState` (MT19937), for the draws the reference builders make.
#[derive(Clone)]
pub struct NumpyRandomState {
    key: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for NumpyRandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumpyRandomState").field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl NumpyRandomState {
    /// `np.random.seed(seed)` / `RandomState(seed)` for an integer seed in 0..2³²: `init_genrand`.
    pub fn new(seed: u32) -> NumpyRandomState {
        let mut key = [0u32; N];
        let mut s = seed;
        for (pos, k) in key.iter_mut().enumerate() {
            *k = s;
            s = 1_812_433_253u32.wrapping_mul(s ^ (s >> 30)).wrapping_add(pos as u32 + 1);
        }
        NumpyRandomState { key, pos: N }
    }

    /// `np.random.seed(seed)` from a wider seed; numpy refuses seeds outside 0..2³², so do we.
    pub fn from_u64(seed: u64) -> anyhow::Result<NumpyRandomState> {
        let seed = u32::try_from(seed).map_err(|_| anyhow::anyhow!("numpy seed {seed} is outside 0..2^32"))?;
        Ok(NumpyRandomState::new(seed))
    }

    fn generate(&mut self) {
        let mag = |y: u32| if y & 1 == 1 { MATRIX_A } else { 0 };
        for i in 0..N {
            let y = (self.key[i] & UPPER_MASK) | (self.key[(i + 1) % N] & LOWER_MASK);
            self.key[i] = self.key[(i + M) % N] ^ (y >> 1) ^ mag(y);
        }
        self.pos = 0;
    }

    /// The next raw 32-bit output (`mt19937_next32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random_sample()`: a 53-bit double in [0, 1) from two draws.
    pub fn random_sample(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `random_interval(max)`: uniform in 0..=max by masking 32-bit draws to the smallest
    /// `2^k - 1 >= max` and rejecting; `max == 0` draws nothing. (Ranges of 2³² and more, which
    /// numpy draws 64 bits at a time for, never occur here.)
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// Legacy `randint(low, high)` (one value, default int64 dtype): `low + interval(high - 1 - low)`
    /// by the masked method; `high == low + 1` draws nothing. Panics unless `low < high` and the
    /// range fits 32 bits.
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        assert!(low < high, "randint({low}, {high}): low >= high");
        let range = u32::try_from(high - 1 - low).expect("randint range fits 32 bits");
        if range == u32::MAX {
            return low + self.next_u32() as i64;
        }
        low + self.interval(range) as i64
    }

    /// Legacy `shuffle` (a list, or a 1-d array): for i from n-1 down to 1, swap i with
    /// `interval(i)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(u32::try_from(i).expect("shuffle length fits 32 bits")) as usize;
            items.swap(i, j);
        }
    }

    /// Legacy `permutation(array)`: a shuffled copy.
    pub fn permutation<T: Clone>(&mut self, items: &[T]) -> Vec<T> {
        let mut out = items.to_vec();
        self.shuffle(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_outputs_of_init_genrand_5489() {
        let mut rng = NumpyRandomState::new(5489);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, [3_499_211_612, 581_869_302, 3_890_346_734]);
        // The 10000th output of the default-seeded generator (C++ std::mt19937's check value).
        let mut rng = NumpyRandomState::new(5489);
        let last = (0..10_000).map(|_| rng.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn seed_42_gives_numpys_well_known_first_values() {
        // np.random.seed(42); np.random.rand(3)
        let mut rng = NumpyRandomState::new(42);
        let values: Vec<f64> = (0..3).map(|_| rng.random_sample()).collect();
        assert_eq!(values, [0.3745401188473625, 0.9507143064099162, 0.7319939418114051]);
        // np.random.seed(42); np.random.randint(0, 10, size=5)
        let mut rng = NumpyRandomState::new(42);
        let ints: Vec<i64> = (0..5).map(|_| rng.randint(0, 10)).collect();
        assert_eq!(ints, [6, 3, 7, 4, 6]);
        // np.random.seed(42); np.random.permutation(10)
        let mut rng = NumpyRandomState::new(42);
        assert_eq!(rng.permutation(&(0..10).collect::<Vec<_>>()), [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
    }

    #[test]
    fn a_range_of_one_value_draws_nothing() {
        let (mut a, mut b) = (NumpyRandomState::new(7), NumpyRandomState::new(7));
        assert_eq!(a.randint(3, 4), 3);
        assert_eq!(a.interval(0), 0);
        assert_eq!(a.next_u32(), b.next_u32());
    }
}
