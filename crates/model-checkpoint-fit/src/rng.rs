//! A seedable random generator whose state can be saved and restored exactly (candle's own
//! CPU generator can be neither): initialisation, shuffling and anything else random in
//! training draw from it.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// ChaCha8 with a 64-bit seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainRng(ChaCha8Rng);

/// A generator's exact position, for full checkpoints. Numbers are strings: JSON readers
/// lose precision above 2^53.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 256-bit key, in hex.
    pub seed: String,
    /// The stream number.
    pub stream: String,
    /// The position in the stream, in 32-bit words.
    pub word_pos: String,
}

impl TrainRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        TrainRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniformly random integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = u64::MAX - (u64::MAX - n + 1) % n;
        loop {
            let x = self.0.next_u64();
            if x <= zone {
                return x % n;
            }
        }
    }

    /// A uniformly random `f32` in `[0, 1)`, from 24 random bits.
    pub fn unit_f32(&mut self) -> f32 {
        (self.0.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// The exact state.
    pub fn state(&self) -> RngState {
        let seed: String = self
            .0
            .get_seed()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        RngState {
            seed,
            stream: self.0.get_stream().to_string(),
            word_pos: self.0.get_word_pos().to_string(),
        }
    }

    /// A generator at exactly `state`, or `None` if the state is malformed.
    pub fn from_state(state: &RngState) -> Option<Self> {
        let mut seed = [0u8; 32];
        if state.seed.len() != 64 {
            return None;
        }
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(state.seed.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(state.stream.parse().ok()?);
        rng.set_word_pos(state.word_pos.parse().ok()?);
        Some(TrainRng(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_mid_stream() {
        let mut a = TrainRng::new(7);
        for _ in 0..13 {
            a.below(1000);
        }
        let mut b = TrainRng::from_state(&a.state()).expect("valid state");
        let xs: Vec<u64> = (0..50).map(|_| a.below(1 << 40)).collect();
        let ys: Vec<u64> = (0..50).map(|_| b.below(1 << 40)).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn malformed_state_is_refused() {
        let mut s = TrainRng::new(1).state();
        s.seed.truncate(10);
        assert!(TrainRng::from_state(&s).is_none());
    }
}
