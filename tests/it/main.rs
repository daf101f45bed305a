//! The one integration-test binary (matklad's layout): each module is one theme.
//!
//! Tests that need real Synapse and PostgreSQL read `STREAMSIM_SYNAPSE_PYTHON` and the
//! `STREAMSIM_PG_*` variables that `.ci/setup-synapse.sh` writes to `target/synapse-env.sh`.
//! Without them they say so and pass, unless `STREAMSIM_REQUIRE_SYNAPSE=1` (set by CI), where a
//! missing oracle is a failure: CI can never silently skip the differential tests.

mod choreo;
mod fault_matrix;
mod idgen_diff;
mod idgen_ports;
mod known_bugs;
mod metrics;
mod props;
mod readme;
mod support;
mod tidy;
mod wire_diff;
mod world;
mod world_props;
