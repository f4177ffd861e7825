//! Which training images calibrate: NumPy's
//! `np.random.RandomState(seed).permutation(n)[:k]`, reproduced exactly so
//! shrink calibrates on the same images as the ONNX Runtime peer baselines
//! (`peers.json`: seed 1234, the first 512 of a permutation of 60000).
//!
//! RandomState is MT19937 seeded by `init_genrand`; `permutation` shuffles
//! `arange(n)` by Fisher–Yates from the end, drawing each index with NumPy's
//! legacy `random_interval` (mask to the next power of two minus one, reject
//! draws above the bound).

/// The Mersenne Twister MT19937 (32-bit outputs).
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32
                .wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Uniform integer in `0..=max` (NumPy's legacy `random_interval`, `max` < 2^32).
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// `np.random.RandomState(seed).permutation(n)`.
pub fn numpy_permutation(seed: u32, n: usize) -> Vec<usize> {
    let mut rng = Mt19937::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.interval(i as u32) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_output() {
        // Published first output of MT19937 seeded with 5489 (the C++ std::mt19937 default).
        let mut r = Mt19937::new(5489);
        assert_eq!(r.next_u32(), 3_499_211_612);
        // std::mt19937's 10000th output for the default seed (C++11 [rand.predef]).
        let mut r = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10000 {
            last = r.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }
}
