//! Config and policy files kept in step with SSM parameters (`ecscale run --from-ssm
//! NAME=FILE`): read before the config is, then again every `--ssm-every`. A parameter that
//! changed is written over its file whole (mode 0600) and a reload is asked for, so an edit in
//! Parameter Store reaches a running worker as an edit of its file would, checked the same way:
//! a mistake keeps the last good files running.
//!
//! All the parameters are read before any file is written, so a config and its policies change
//! together, and a parameter that cannot be read changes nothing.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::control::Trigger;
use crate::aws::ssm::{Parameter, ParameterStore};

/// One `--from-ssm NAME=FILE`: the file kept in step with the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromSsm {
    pub parameter: String,
    pub file: PathBuf,
}

impl std::str::FromStr for FromSsm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (parameter, file) = s.split_once('=').ok_or_else(|| {
            format!("`{s}`: expected NAME=FILE, an SSM parameter and the file it is written to")
        })?;
        let rooted = !parameter.contains('/') || parameter.starts_with('/') || parameter.starts_with("arn:");
        if parameter.is_empty() || !rooted || parameter.contains(char::is_whitespace) {
            return Err(format!(
                "`{parameter}`: an SSM parameter is a name, a path from the root (/ecscale/config) or an ARN"
            ));
        }
        if file.is_empty() {
            return Err(format!("`{s}`: no file after `=`"));
        }
        Ok(FromSsm {
            parameter: parameter.to_string(),
            file: PathBuf::from(file),
        })
    }
}

/// The parameters and their files.
#[derive(Debug, Clone)]
pub struct Sources {
    store: ParameterStore,
    list: Vec<FromSsm>,
}

impl Sources {
    pub fn new(store: ParameterStore, list: Vec<FromSsm>) -> Self {
        Sources { store, list }
    }

    /// Reads every parameter, then writes those whose text differs from their file. The files
    /// written, with their parameter's version; the first parameter that could not be read (or
    /// file that could not be written) otherwise.
    pub async fn fetch(&self) -> Result<Vec<(PathBuf, i64)>, String> {
        let mut read = Vec::with_capacity(self.list.len());
        for s in &self.list {
            read.push(self.store.get(&s.parameter).await?);
        }
        let mut changed = Vec::new();
        for (s, p) in self.list.iter().zip(read) {
            if same_text(s, &p) {
                continue;
            }
            crate::files::write_private(&s.file, p.value.as_bytes()).map_err(|e| {
                format!(
                    "{}: cannot write SSM parameter {}: {e}",
                    s.file.display(),
                    s.parameter
                )
            })?;
            changed.push((s.file.clone(), p.version));
        }
        Ok(changed)
    }

    /// Fetches every `every` until `stop`; asks for a reload when a file changed. A failure is
    /// logged (and counted among the AWS calls' failed attempts); the files stay as they were.
    pub fn poll(
        self,
        every: Duration,
        tx: mpsc::Sender<Trigger>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                match self.fetch().await {
                    Ok(changed) if changed.is_empty() => {}
                    Ok(changed) => {
                        tracing::info!("SSM: {}: reloading", describe(&changed));
                        if tx.send(Trigger::Parameter).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(
                        "{e}; the files stay as they are, read again in {}",
                        humantime::format_duration(every)
                    ),
                }
            }
        })
    }
}

/// Whether the file already holds the parameter's text.
fn same_text(s: &FromSsm, p: &Parameter) -> bool {
    std::fs::read(&s.file).is_ok_and(|b| b == p.value.as_bytes())
}

/// "FILE (version N), …".
pub fn describe(changed: &[(PathBuf, i64)]) -> String {
    changed
        .iter()
        .map(|(f, v)| format!("{} (version {v})", f.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_a_parameter_name_path_or_arn_and_a_file() {
        assert_eq!("plain=f".parse::<FromSsm>().unwrap().parameter, "plain");
        let s: FromSsm = "/ecscale/config=/tmp/e/ecscale.yaml".parse().unwrap();
        assert_eq!(s.parameter, "/ecscale/config");
        assert_eq!(s.file, PathBuf::from("/tmp/e/ecscale.yaml"));
        let arn = "arn:aws:ssm:us-east-1:123456789012:parameter/ecscale/policies=p.yaml";
        assert_eq!(arn.parse::<FromSsm>().unwrap().file, PathBuf::from("p.yaml"));
        for (bad, says) in [
            ("/ecscale/config", "expected NAME=FILE"),
            ("ecscale/config=f", "a path from the root"),
            ("=f", "a name, a path"),
            ("/ecscale/my config=f", "a path from the root"),
            ("/ecscale/config=", "no file after"),
        ] {
            let e = bad.parse::<FromSsm>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
