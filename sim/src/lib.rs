//! streamsim-sim: the world that drives streamsim's models, and the judgement of what
//! happened in it.
//!
//! Code map:
//! - [`bench`]: the two ceiling figures of `streamsim bench` (raw TCP echo, models alone).
//! - [`scenario`]: scenario files (TOML) and their validation.
//! - [`engine`]: the event-driven engine: hosts on one paused runtime, TCP over simulated links.
//! - [`world`]: the world of a run on the engine: hosts, transports, the fault driver.
//! - [`faults`]: the fault schedule, scheduled and drawn from the seed.
//! - [`generate`]: whole scenarios generated from a seed (bug hunts, property tests).
//! - [`net`]: simulated time, ports and request/response framing shared by the hosts.
//! - [`hunt`]: the bug hunt over generated scenarios (`streamsim bugs --hunt`).
//! - [`history`]: every observable act of a run, in simulated time (`--trace` JSON lines).
//! - [`choreo`]: choreographies (tools/synapse/CHOREO.md) run through the models, step by
//!   step, printing what the system oracle prints for real Synapse.
//! - [`checks`]: the invariants of DESIGN.md as named `always`/`eventually` properties and the
//!   `sometimes` coverage targets of a sweep.
//! - [`aggregation`]: what the metrics system did in a run, and its own invariants.
//! - [`timeline`]: a run as Chrome trace-event JSON.
//! - [`shrink`]: a failing run delta-debugged down to a smaller scenario (`streamsim shrink`).

pub mod aggregation;
pub mod bench;
pub mod checks;
pub mod choreo;
pub mod engine;
pub mod faults;
pub mod generate;
pub mod history;
pub mod hunt;
pub mod net;
pub mod runner;
pub mod scenario;
pub mod shrink;
pub mod timeline;
pub mod world;
