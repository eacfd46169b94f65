//! `ecscale setup`, `ecscale ship replay`, `ecscale dashboards ...`.

use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, Failure, EXIT_FAILURE};
use crate::config::{self, env::Vars, ElasticsearchSettings};
use crate::ship::elasticsearch::Es;
use crate::ship::templates::{self, TemplateOptions};
use crate::ship::{self, SendOptions};

/// Where Elasticsearch is and how to reach it.
#[derive(Debug, clap::Args)]
pub(super) struct EsArgs {
    /// Elasticsearch or OpenSearch URL (else the config's sink.elasticsearch.url).
    #[arg(long, env = "ECSCALE_ES_URL")]
    es: Option<String>,
    /// Take auth, CA, prefix and replicas from this config's sink.elasticsearch.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Index prefix (default: the config's sink.index_prefix, else `ecscale`).
    #[arg(long)]
    prefix: Option<String>,
    /// Replicas per index (default: the config's, else 1; 0 on a single node).
    #[arg(long)]
    replicas: Option<u32>,
}

impl EsArgs {
    /// The endpoint settings and the index prefix.
    fn settings(&self, vars: &Vars) -> Result<(ElasticsearchSettings, String), Failure> {
        let sink = match &self.config {
            Some(path) => Some(
                config::load(path, vars)
                    .map_err(|d| invalid(anyhow::anyhow!("{d}")))?
                    .sink,
            ),
            None => None,
        };
        let prefix = self
            .prefix
            .clone()
            .or_else(|| sink.as_ref().map(|s| s.index_prefix.clone()))
            .unwrap_or_else(|| "ecscale".to_string());
        let mut s = match (sink.and_then(|s| s.elasticsearch), &self.es) {
            (Some(mut s), Some(url)) => {
                s.url = url.clone();
                s
            }
            (Some(s), None) => s,
            (None, Some(url)) => ElasticsearchSettings::new(url.clone()),
            (None, None) => {
                return Err(invalid(anyhow::anyhow!(
                    "no Elasticsearch: give --es URL (or ECSCALE_ES_URL), or --config with sink.elasticsearch"
                )))
            }
        };
        config::check_http_url(&s.url).map_err(|e| invalid(anyhow::anyhow!("--es: {e}")))?;
        if let Some(r) = self.replicas {
            s.replicas = r;
        }
        Ok((s, prefix))
    }
}

/// How a replay goes.
#[derive(Debug, clap::Args)]
pub(super) struct ReplayArgs {
    /// Send the documents of the spool's dead-letter file instead (once their cause is fixed);
    /// those refused again stay in it.
    #[arg(long)]
    dead_letters: bool,
    /// Stop (exit 1, the documents stay in the spool) after this long without progress: an
    /// Elasticsearch that stays unreachable, or refuses the credentials.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    max_wait: Duration,
}

fn template_options(s: &ElasticsearchSettings, prefix: &str) -> TemplateOptions {
    TemplateOptions {
        prefix: prefix.to_string(),
        replicas: s.replicas,
        ilm_policy: s.ilm_policy.clone(),
    }
}

pub(super) async fn setup(args: EsArgs, vars: &Vars) -> Result<u8, Failure> {
    let (s, prefix) = args.settings(vars)?;
    let es = Es::connect(&s, s.timeout).map_err(invalid)?;
    let n = templates::install(&es, &template_options(&s, &prefix)).await?;
    println!(
        "{}: {n} templates installed for {p}-metrics-*, {p}-decisions-*, {p}-stress-*, {p}-deadletter-* ({} replicas)",
        es.url,
        s.replicas,
        p = prefix
    );
    Ok(0)
}

pub(super) async fn replay(dir: PathBuf, args: EsArgs, how: ReplayArgs, vars: &Vars) -> Result<u8, Failure> {
    if !dir.is_dir() {
        return Err(invalid(anyhow::anyhow!(
            "{}: not a spool directory",
            dir.display()
        )));
    }
    let given = args.prefix.clone();
    let (s, prefix) = args.settings(vars)?;
    // The documents were named when they entered the spool: the templates must match them.
    let prefix = match (ship::spool_prefix(&dir), given) {
        (Some(found), Some(p)) if found != p => {
            return Err(invalid(anyhow::anyhow!(
                "{}: the spool's documents are named for index prefix `{found}`, not `{p}`",
                dir.display()
            )))
        }
        (Some(found), _) => found,
        (None, _) => prefix,
    };
    let es = Es::connect(&s, s.timeout).map_err(invalid)?;
    let opts = SendOptions {
        prefix: prefix.clone(),
        max_in_flight: s.max_in_flight,
        flush_interval: Duration::ZERO,
        templates: template_options(&s, &prefix),
        give_up_after: Some(how.max_wait),
    };
    let letters = dir.join(ship::spool::DEAD_LETTERS);
    if how.dead_letters {
        let stats = ship::replay_dead_letters(&dir, es, opts).await?;
        println!(
            "{}: {} documents delivered, {} refused again (kept in {} with their new reason)",
            letters.display(),
            stats.delivered,
            stats.dead_lettered,
            letters.display(),
        );
        return Ok(if stats.dead_lettered > 0 { EXIT_FAILURE } else { 0 });
    }
    let stats = ship::replay(&dir, es, opts).await?;
    let errors: Vec<String> = stats.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "{}: {} documents delivered, {} retried, {} dead-lettered ({} in {}), {} requests ({} failed{})",
        dir.display(),
        stats.delivered,
        stats.retried,
        stats.dead_lettered,
        stats.dead_letter_file,
        letters.display(),
        stats.requests,
        stats.failed_requests,
        if errors.is_empty() {
            String::new()
        } else {
            format!(": {}", errors.join(", "))
        }
    );
    Ok(if stats.dead_lettered > 0 { EXIT_FAILURE } else { 0 })
}

fn dashboards_file(dir: &std::path::Path) -> PathBuf {
    dir.join("ecscale.ndjson")
}

pub(super) fn dashboards_check(dir: PathBuf) -> Result<u8, Failure> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| invalid(anyhow::anyhow!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(invalid(anyhow::anyhow!(
            "{}: no .ndjson saved-object files",
            dir.display()
        )));
    }
    let mut problems = 0;
    for f in &files {
        let text =
            std::fs::read_to_string(f).map_err(|e| invalid(anyhow::anyhow!("{}: {e}", f.display())))?;
        let report = crate::dashboards::check(&text);
        for p in &report.problems {
            eprintln!("{}:{}: {} ({})", f.display(), p.line, p.message, p.id);
        }
        problems += report.problems.len();
        let counts: Vec<String> = report.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("{}: {}", f.display(), counts.join(", "));
    }
    if problems > 0 {
        return Err(invalid(anyhow::anyhow!(
            "{problems} problems in the saved objects"
        )));
    }
    Ok(0)
}

pub(super) fn dashboards_export(dir: PathBuf, prefix: &str) -> Result<u8, Failure> {
    std::fs::create_dir_all(&dir)?;
    let path = dashboards_file(&dir);
    std::fs::write(&path, crate::dashboards::ndjson(prefix))?;
    println!(
        "{} written ({} objects, index prefix {prefix})",
        path.display(),
        crate::dashboards::saved_objects(prefix).len()
    );
    Ok(0)
}

pub(super) async fn dashboards_install(
    kibana: String,
    prefix: Option<String>,
    dir: PathBuf,
    username: Option<String>,
    password_env: Option<String>,
) -> Result<u8, Failure> {
    config::check_http_url(&kibana).map_err(|e| invalid(anyhow::anyhow!("--kibana: {e}")))?;
    // A custom prefix gets freshly generated objects; otherwise the files as shipped.
    let ndjson = match prefix {
        Some(p) => crate::dashboards::ndjson(&p),
        None => std::fs::read_to_string(dashboards_file(&dir))
            .map_err(|e| invalid(anyhow::anyhow!("{}: {e}", dashboards_file(&dir).display())))?,
    };
    let auth = match (username, password_env) {
        (Some(u), Some(var)) => Some((
            u,
            std::env::var(&var).map_err(|_| {
                invalid(anyhow::anyhow!(
                    "environment variable {var} (--password-env) is not set"
                ))
            })?,
        )),
        (None, None) => None,
        _ => {
            return Err(invalid(anyhow::anyhow!(
                "--username and --password-env go together"
            )))
        }
    };
    let n = crate::dashboards::install(&kibana, ndjson, auth)
        .await
        .map_err(|e| Failure {
            code: EXIT_FAILURE,
            error: anyhow::anyhow!(e),
        })?;
    println!("{kibana}: {n} saved objects imported");
    Ok(0)
}
