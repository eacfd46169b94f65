//! ecscale: an autoscaling and metrics pipeline for Amazon ECS.
//!
//! Data flow: [`collect`] reads ECS and CloudWatch into a [`model::Snapshot`]; later stages
//! (ship, evaluate, actuate) consume it. [`config`] reads the worker's YAML file; [`api`] holds
//! the small traits AWS (in [`aws`]) and the simulator implement; [`usage`] counts API calls.

pub mod api;
pub mod aws;
pub mod cli;
pub mod collect;
pub mod config;
pub mod model;
pub mod usage;
