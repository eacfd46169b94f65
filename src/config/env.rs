//! `ECSCALE_*` environment variables: runtime knobs that override the config file.
//!
//! Intent (what to scale and how) lives in files; where to connect, which region, how loud to
//! log, are knobs an operator sets per environment. [`VARIABLES`] is the one list of them; the
//! README's table is checked against it by a test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::fields::check_http_url;
use super::fields::is_region;
use super::schema::{AwsSettings, Config, ElasticsearchSettings};
use crate::read::yaml::Span;
use crate::read::Diagnostic;

/// Every variable ecscale reads, with what it does (the README's table).
pub const VARIABLES: &[(&str, &str)] = &[
    (
        "ECSCALE_CONFIG",
        "Path of the config file, when `--config` is not given.",
    ),
    (
        "ECSCALE_LOG",
        "Log filter (`error`, `warn`, `info`, `debug`, or `ecscale=debug,aws_config=warn`); default `warn`.",
    ),
    ("ECSCALE_AWS_REGION", "Overrides `aws.region`."),
    (
        "ECSCALE_AWS_ENDPOINT_URL",
        "Overrides `aws.endpoint_url` (any AWS-compatible endpoint).",
    ),
    ("ECSCALE_AWS_PROFILE", "Overrides `aws.profile`."),
    ("ECSCALE_AWS_MAX_ATTEMPTS", "Overrides `aws.retry.max_attempts`."),
    (
        "ECSCALE_ES_URL",
        "Overrides `sink.elasticsearch.url` (adds the section when absent).",
    ),
    ("ECSCALE_SPOOL_DIR", "Overrides `sink.spool.dir`."),
    (
        "ECSCALE_STRESS_TOKEN",
        "The secret a distributed stress run's local agents authenticate with (the coordinator sets it for the agents it starts).",
    ),
    (
        "ECSCALE_METRICS_ADDR",
        "Overrides `worker.metrics_addr` (`off`: no `/metrics` endpoint).",
    ),
    (
        "ECSCALE_FROM_SSM",
        "`ecscale run --from-ssm`: `NAME=FILE` pairs, comma-separated, the SSM parameters the config and policy files are kept in step with.",
    ),
    (
        "ECSCALE_SSM_EVERY",
        "`ecscale run --ssm-every`: how often those parameters are read again (default `1m`).",
    ),
    (
        "ECSCALE_EMF_STACK",
        "`ecscale run`: when set, one CloudWatch Embedded Metric Format line per tick on stdout (namespace `ecscale`, dimension `Stack` = this value), for the stack's alarms.",
    ),
    (
        "ECSCALE_CONTROL_TOKEN",
        "The bearer token `POST /reload` needs when `worker.metrics_addr` is not a loopback address (without it, such a worker refuses reloads over HTTP).",
    ),
];

/// A secret from the environment variable `var` that the setting `field` names: set and not
/// empty, or an error naming both (never the value).
pub fn secret(var: &str, field: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!(
            "environment variable {var} (named by {field}) is not set"
        )),
    }
}

/// Variables only the test suite reads (set by `scripts/test-services`).
pub const TEST_VARIABLES: &[&str] = &[
    "ECSCALE_TEST_MOTO_URL",
    "ECSCALE_TEST_ES_URL",
    "ECSCALE_TEST_PROMETHEUS_URL",
    "ECSCALE_TEST_PROMETHEUS_TARGETS",
    "ECSCALE_TEST_PROMTOOL",
    "ECSCALE_TEST_PYTHON",
];

/// A snapshot of the `ECSCALE_*` variables, so loading is a pure function of its inputs.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// The `ECSCALE_*` variables of this process.
    pub fn from_env() -> Self {
        Vars(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("ECSCALE_"))
                .collect(),
        )
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Vars(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `ECSCALE_*` variables set that ecscale does not know: likely typos, worth a warning.
    pub fn unknown(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(String::as_str)
            .filter(|k| !VARIABLES.iter().any(|(v, _)| v == k) && !TEST_VARIABLES.contains(k))
            .collect()
    }
}

/// Applies the overrides to a config read from its file. Returns the mistakes (bad values).
pub fn apply(config: &mut Config, vars: &Vars) -> Vec<Diagnostic> {
    let mut diags = apply_aws(&mut config.aws, vars);
    let mut bad = |name: &str, message: String| diags.push(environment(name, message));
    if let Some(v) = vars.get("ECSCALE_ES_URL") {
        match check_http_url(v) {
            Ok(()) => match &mut config.sink.elasticsearch {
                Some(es) => es.url = v.to_string(),
                None => config.sink.elasticsearch = Some(ElasticsearchSettings::new(v)),
            },
            Err(e) => bad("ECSCALE_ES_URL", e),
        }
    }
    if let Some(v) = vars.get("ECSCALE_SPOOL_DIR") {
        config.sink.spool.dir = PathBuf::from(v);
    }
    if let Some(v) = vars.get("ECSCALE_METRICS_ADDR") {
        if v == "off" {
            config.worker.metrics_addr = None;
        } else {
            match v.parse() {
                Ok(a) => config.worker.metrics_addr = Some(a),
                Err(e) => bad(
                    "ECSCALE_METRICS_ADDR",
                    format!("`{v}` is not an address such as 127.0.0.1:9464 ({e})"),
                ),
            }
        }
    }
    diags
}

/// Applies the `ECSCALE_AWS_*` overrides to `aws` alone (what is known of AWS before a config
/// is read). Returns the mistakes (bad values).
pub fn apply_aws(aws: &mut AwsSettings, vars: &Vars) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut bad = |name: &str, message: String| diags.push(environment(name, message));
    if let Some(v) = vars.get("ECSCALE_AWS_REGION") {
        if is_region(v) {
            aws.region = Some(v.to_string());
        } else {
            bad(
                "ECSCALE_AWS_REGION",
                format!("`{v}` does not look like an AWS region (e.g. us-east-1)"),
            );
        }
    }
    if let Some(v) = vars.get("ECSCALE_AWS_ENDPOINT_URL") {
        match check_http_url(v) {
            Ok(()) => aws.endpoint_url = Some(v.to_string()),
            Err(e) => bad("ECSCALE_AWS_ENDPOINT_URL", e),
        }
    }
    if let Some(v) = vars.get("ECSCALE_AWS_PROFILE") {
        aws.profile = Some(v.to_string());
    }
    if let Some(v) = vars.get("ECSCALE_AWS_MAX_ATTEMPTS") {
        match v.parse::<u32>() {
            Ok(n) if (1..=20).contains(&n) => aws.retry.max_attempts = n,
            _ => bad(
                "ECSCALE_AWS_MAX_ATTEMPTS",
                format!("`{v}` is not a whole number from 1 to 20"),
            ),
        }
    }
    diags
}

/// A mistake in the environment variable `name`.
fn environment(name: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: "environment".into(),
        span: Span::default(),
        path: name.to_string(),
        message,
    }
}
