//! Deterministic simulation of whole Nacre clusters.
//!
//! [`run_seed`] runs N real nodes (the production raft driver, tlog, state
//! machine and store) in one thread over a simulated network and one
//! simulated disk per node, with clients, faults and every random choice
//! drawn from one seed, and then checks what the clients saw: see
//! docs/testing.md.

pub mod checker;
mod clock;
pub mod model;
mod sim;

pub use sim::{run_seed, Bug, Report, Scenario, Sim, SimConfig, Stats};
