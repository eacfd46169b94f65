//! ecscale: an autoscaling and metrics pipeline for Amazon ECS.
//!
//! Data flow: [`collect`] reads ECS and CloudWatch into a [`model::Snapshot`]; [`evaluate`]
//! turns it into [`model::Decision`]s with the [`policy`] files; later stages (ship, actuate)
//! consume both. [`config`] reads the worker's YAML file; [`api`] holds
//! the small traits AWS (in [`aws`]) and the simulator implement; [`usage`] counts API calls.

pub mod actuate;
pub mod api;
pub mod aws;
pub mod cli;
pub mod collect;
pub mod config;
pub mod dashboards;
pub mod deploy;
pub mod errors;
pub mod eval_io;
pub mod evaluate;
pub mod files;
pub mod format;
#[cfg(test)]
mod fuzz;
pub mod lsq;
pub mod model;
pub mod plot;
pub mod policy;
pub mod read;
pub mod ship;
pub mod sim;
pub mod stress;
pub mod tune;
pub mod usage;
pub mod worker;

/// One allocator for every binary that links the library, so the benches measure what the
/// `ecscale` binary runs. Cargo.toml says why this one.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
