//! The worker configuration: one YAML file (`ecscale.yaml`), read into validated types.
//!
//! Everything downstream (the AWS clients, the collect stage, later the worker) takes these
//! types, never the YAML. Reading reports *all* mistakes at once ([`Diagnostics`]) with
//! `file:line:column` and the field path; unknown keys are rejected. `ECSCALE_*` variables
//! override runtime knobs after the file is read (see [`env`]).

pub mod cron;
pub mod env;
mod fields;
mod groups;
mod notify;
mod parse;
mod parse_clusters;
mod schema;
mod worker;

use std::path::{Path, PathBuf};

pub use crate::read::{Diagnostic, Diagnostics};
pub use fields::is_region;
pub use fields::{check_http_url, redact_url};
pub use groups::{parse_attribute, AttrOp, AttributeExpr, Constraint, Field, GroupSpec, Placement, SpreadBy};
pub use notify::{EventKind, NotifyFormat, NotifyTarget, UrlSource};
pub use parse::{glob_files, kept_at, parse_cron};
pub use parse_clusters::{check_placeholders, is_stat, role_account};
pub use schema::*;
pub use worker::{
    read_resources, AppAutoScaling, CapacitySpec, LeaderSettings, ManagedScaling, StateBackend,
    WorkerSettings,
};

use crate::read::yaml::{self, Span};
use crate::read::{self, Cx};

/// Where the config comes from when no `--config` or `ECSCALE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "ecscale.yaml";

/// Reads, checks and returns the configuration at `path`, with `ECSCALE_*` overrides from `vars`
/// applied. On any mistake, returns all of them.
pub fn load(path: &Path, vars: &env::Vars) -> Result<Config, Diagnostics> {
    let display = path.display().to_string();
    let source = read::read_source(path, "the config file")?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&source, &display, &base_dir, vars)
}

/// The policy files a config file names, found as far as its mistakes allow: `validate` lists
/// their mistakes beside the config's own.
pub fn policy_files_in(path: &Path) -> Vec<PathBuf> {
    let Ok(source) = read::read_source(path, "the config file") else {
        return Vec::new();
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Cx::new(path.display().to_string());
    let Some(docs) = read::parse_yaml(&source, &mut cx) else {
        return Vec::new();
    };
    let Some(yaml::Value::Map(entries)) = docs.first().map(|d| &d.value) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(k, _)| k.as_scalar() == Some("policies"))
        .flat_map(|(_, v)| parse::policy_paths(v, "policies", &mut cx, &base_dir).files)
        .collect()
}

/// As [`load`], from text already read. `base_dir` anchors relative paths (policy files, spool).
pub fn load_str(source: &str, file: &str, base_dir: &Path, vars: &env::Vars) -> Result<Config, Diagnostics> {
    let mut cx = Cx::new(file);
    let Some(docs) = crate::read::parse_yaml(source, &mut cx) else {
        return Err(Diagnostics(cx.diags));
    };
    let root = match docs.as_slice() {
        [one] => one,
        [] => {
            cx.error(Span { line: 1, col: 1 }, "(file)", "the config file is empty");
            return Err(Diagnostics(cx.diags));
        }
        [_, second, ..] => {
            cx.error(
                second.span,
                "(file)",
                "the config file must hold one YAML document, not several",
            );
            return Err(Diagnostics(cx.diags));
        }
    };
    let config = parse::read_config(root, &mut cx, base_dir, PathBuf::from(file));
    let mut diags = cx.diags;
    let config = config.and_then(|mut c| {
        diags.extend(env::apply(&mut c, vars));
        diags.is_empty().then_some(c)
    });
    diags.sort_by(|a, b| (a.file != file, &a.file, a.span).cmp(&(b.file != file, &b.file, b.span)));
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => Err(Diagnostics(diags)),
    }
}

#[cfg(test)]
mod tests;
