//! `ecscale status`: what the worker is doing now, from a running worker's `/status`, or from
//! the state backend when none answers.

use std::net::SocketAddr;
use std::time::Duration;

use super::{invalid, load_config, Failure, Format};
use crate::aws::AwsContext;
use crate::config::env::Vars;
use crate::config::StateBackend;
use crate::usage::ApiMeter;
use crate::worker::status::{build, render, Status};

/// The worker's `/status` at `addr` (an unspecified bind address is asked on loopback).
async fn from_worker(addr: SocketAddr) -> Result<Status, String> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/status");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::read::bounded::describe(e)))?;
    if !answer.status().is_success() {
        return Err(format!("{url}: HTTP {}", answer.status()));
    }
    let mut s: Status = answer
        .json()
        .await
        .map_err(|e| format!("{url}: not a status: {e}"))?;
    s.source = format!("worker at {url}");
    Ok(s)
}

pub async fn status(path: &std::path::Path, vars: &Vars, format: Format) -> Result<u8, Failure> {
    let config = load_config(path, vars)?;
    let asked = match config.worker.metrics_addr {
        Some(addr) => from_worker(addr).await,
        None => Err("worker.metrics_addr is off".into()),
    };
    let status = match asked {
        Ok(s) => s,
        Err(why) => {
            let files =
                crate::policy::load_for(&config).map_err(|d| super::mistakes(d, "the policy files"))?;
            let policies: Vec<_> = files.into_iter().flat_map(|f| f.targets).collect();
            let aws = match config.worker.state {
                StateBackend::DynamoDb { .. } => Some(
                    AwsContext::connect(&config.aws, ApiMeter::default())
                        .await
                        .map_err(invalid)?,
                ),
                StateBackend::File(_) => None,
            };
            let store = crate::worker::store(&config, aws.as_ref().map(|a| &a.dynamodb))?;
            let state = store
                .load()
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", store.describe()))?;
            Status {
                source: format!("{} (no worker answering: {why})", store.describe()),
                targets: build(&policies, &state, &[], chrono::Utc::now()),
                ..Status::default()
            }
        }
    };
    match format {
        Format::Table => print!("{}", render(&status)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(0)
}
