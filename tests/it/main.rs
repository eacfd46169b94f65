//! Integration tests: the ecscale binary against real services (moto for AWS, OpenSearch for
//! Elasticsearch), started by `scripts/test-services` and found through ECSCALE_TEST_* variables.
//! One test binary; each test uses its own AWS region in moto so their state never mixes.

// All of this crate is test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod collect;
mod dashboards;
mod demo;
mod deploy;
mod docs;
mod events;
mod notify;
mod policy;
mod prometheus;
mod services;
mod ship;
mod ship_faults;
mod stress;
mod stress_dist;
mod stress_tls;
mod support;
mod trace;
mod validate;
mod worker;
mod worker_live;
