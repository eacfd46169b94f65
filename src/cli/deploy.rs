//! `ecscale deploy check`.

use std::path::PathBuf;

use super::{invalid, load_config, mistakes, Failure};
use crate::config::env::Vars;

/// `ecscale deploy check` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct CheckArgs {
    /// The CloudFormation template (YAML or JSON, intrinsics in long form).
    #[arg(long, default_value = "deploy/ecscale.cfn.yaml")]
    template: PathBuf,
    /// The config the stack will run (its policies are read from the files it names).
    #[arg(long, short = 'c', env = "ECSCALE_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// The stack's ClusterNames, as you will deploy it (default: the template's default).
    #[arg(long, value_delimiter = ',')]
    clusters: Vec<String>,
}

pub(super) fn check(args: CheckArgs, vars: &Vars) -> Result<u8, Failure> {
    let stack = crate::deploy::read_template(&args.template).map_err(|e| invalid(anyhow::anyhow!(e)))?;
    let clusters = match (args.clusters.is_empty(), &stack.cluster_names) {
        (false, _) => args.clusters.clone(),
        (true, Some(names)) => names.clone(),
        (true, None) => {
            return Err(invalid(anyhow::anyhow!(
                "{}: ClusterNames has no default: give --clusters, as you will deploy the stack",
                stack.file
            )))
        }
    };
    let config = load_config(&args.config, vars)?;
    let policies: Vec<_> = crate::policy::load_for(&config)
        .map_err(|d| mistakes(d, "the policy files"))?
        .into_iter()
        .flat_map(|f| f.targets)
        .collect();
    let problems = crate::deploy::check(&stack, &clusters, &config, &policies);
    if !problems.is_empty() {
        let n = problems.len();
        return Err(invalid(anyhow::anyhow!(
            "{}\n{n} problem{} with {} and {}",
            problems.join("\n"),
            if n == 1 { "" } else { "s" },
            args.template.display(),
            args.config.display()
        )));
    }
    let needed: std::collections::BTreeSet<&str> = crate::deploy::required(&config)
        .iter()
        .map(|n| n.action)
        .collect();
    println!(
        "{} and {} fit: the {} AWS actions the config needs are granted, its {} targets are in the stack's clusters ({})",
        args.template.display(),
        args.config.display(),
        needed.len(),
        policies.len(),
        clusters.join(",")
    );
    Ok(0)
}
