//! streamsim-sim: the world that drives streamsim's models, and the judgement of what
//! happened in it.
//!
//! Code map:
//! - [`history`]: every observable act of a run, in simulated time (`--trace` JSON lines).
//! - [`scenario`]: scenario files (TOML) and their validation.
//! - [`checks`]: the invariants of DESIGN.md as named `always`/`eventually` properties and the
//!   `sometimes` coverage targets of a sweep.
//!
//! The turmoil world (hosts, faults, scenarios, runner) is being built on top of these.

pub mod checks;
pub mod history;
pub mod scenario;
