//! The evaluate stage: policies turn what was collected into [`crate::model::Decision`]s.
//!
//! Sits between collect and actuate. Everything here is pure: `now`, the metrics and the
//! per-target state come in, a decision comes out, so every rule and the engine are unit- and
//! back-testable. (`external` plugins do I/O; their answers are fetched before evaluation, see
//! `crate::policy::external`, and handed in like any other input.)
//!
//! What a rule reads and answers ([`crate::eval_io`]) is shared with the rule kinds; this stage
//! depends on the kinds only through the [`crate::policy::Policy`] trait.

pub mod backtest;
pub mod engine;
pub mod trace;

pub use engine::{decide, TargetState};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
