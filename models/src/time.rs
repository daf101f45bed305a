//! Simulated time as a value: models never read a clock, they are told the time.

use std::fmt;
use std::ops::{Add, Sub};

/// A moment of simulated time, in milliseconds since the simulation began.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct SimInstant(pub u64);

impl SimInstant {
    pub const ZERO: SimInstant = SimInstant(0);

    pub fn from_ms(ms: u64) -> Self {
        SimInstant(ms)
    }

    pub fn as_ms(self) -> u64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn ms_since(self, earlier: SimInstant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for SimInstant {
    type Output = SimInstant;

    /// Adds milliseconds.
    fn add(self, ms: u64) -> SimInstant {
        SimInstant(self.0 + ms)
    }
}

impl Sub for SimInstant {
    type Output = u64;

    /// Milliseconds between two instants; panics if `other` is later (a model bug).
    fn sub(self, other: SimInstant) -> u64 {
        self.0
            .checked_sub(other.0)
            .expect("time does not run backwards")
    }
}

impl fmt::Display for SimInstant {
    /// `12.345s`, as reports show simulated time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}
