//! streamsim-sim: the turmoil world that drives streamsim's models (hosts, faults, history,
//! checks and the runner). It holds nothing yet beyond this crate boundary: the foundation
//! issue builds the models first, and the world issue fills this crate.
