//! What operators ask of a running worker from outside its loop (SIGHUP, `POST /reload`, the
//! file watcher), and what they are answered. No dependency on the rest of the worker, so the
//! metrics endpoint and the reload can both use it.

use tokio::sync::oneshot;

/// What asked for a reload.
#[derive(Debug)]
pub enum Trigger {
    Signal,
    /// `POST /reload`: the answer goes back to the caller.
    Http(oneshot::Sender<Outcome>),
    /// A watched file changed (and settled).
    Watch,
    /// An SSM parameter the files come from changed, and its file was written.
    Parameter,
}

impl Trigger {
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::Http(_) => "http",
            Trigger::Watch => "watch",
            Trigger::Parameter => "ssm",
        }
    }
}

/// How a reload went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `ok`, `unchanged` or `failed`.
    pub result: &'static str,
    /// What changed, or the mistakes (one per line).
    pub text: String,
}
