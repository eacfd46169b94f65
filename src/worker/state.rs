//! What the worker remembers across ticks and restarts: the engine's per-target state (cooldown
//! clocks, stabilization windows, applied schedule windows), the last action per target, the
//! capacity actuator's drains and cooldowns, and how far each metric series was shipped.
//!
//! Two stores. A **file** (one worker): the whole state as JSON, written to a temporary file,
//! synced and renamed over the old one after every tick, so a crash leaves the old state or the
//! new, never half of one. **DynamoDB** (several workers): one item per target and per group
//! (`state/target/...`, `state/group/...`), each written only when it changed, and only if no
//! later leader wrote it: every write carries the writer's fencing token and is conditional on
//! the stored one being no newer.
//!
//! A state that cannot be read (corrupt file, a table that does not exist) stops the worker at
//! start rather than being replaced by an empty one: forgetting a cooldown is an action taken
//! twice.

use crate::files::write_atomically;
use crate::read::{read_bounded_bytes, BoundedError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::actuate::capacity::GroupState;
use crate::evaluate::TargetState;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("DynamoDB state table {table}: {message}")]
    Dynamo { table: String, message: String },
    /// A newer leader wrote the state: this worker must stop acting.
    #[error("DynamoDB state table {table}: item {key} was written by a newer leader (our fencing token {ours} is older); not overwriting it")]
    Fenced { table: String, key: String, ours: u64 },
}

type Result<T, E = StateError> = std::result::Result<T, E>;

/// The last action taken on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAction {
    pub at: DateTime<Utc>,
    pub from: u32,
    pub to: u32,
    /// `updated`, `refused`, `failed`, ...
    pub result: String,
}

/// One target's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    #[serde(default)]
    pub engine: TargetState,
    #[serde(default)]
    pub last_action: Option<LastAction>,
}

/// Everything the worker remembers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    /// By target (`cluster/service`, `asg/NAME`).
    #[serde(default)]
    pub targets: BTreeMap<String, TargetRecord>,
    /// By Auto Scaling group name.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupState>,
    /// By series (`cluster/service:metric`): the newest datapoint shipped.
    #[serde(default)]
    pub shipped_until: BTreeMap<String, DateTime<Utc>>,
}

/// Where the state lives.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self) -> Result<WorkerState>;
    /// Saves the state; `fencing` is the leader's token when there is a leader.
    async fn save(&self, state: &WorkerState, fencing: Option<u64>) -> Result<()>;
    /// For messages: `file /var/lib/ecscale/state.json`, `DynamoDB table ecscale`.
    fn describe(&self) -> String;
}

/// A dry run's view of a store: reads it, never writes it (a dry run must not move the clocks of
/// the worker that acts).
pub struct ReadOnly(pub Box<dyn StateStore>);

#[async_trait]
impl StateStore for ReadOnly {
    async fn load(&self) -> Result<WorkerState> {
        self.0.load().await
    }

    async fn save(&self, _state: &WorkerState, _fencing: Option<u64>) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} (read only: dry run)", self.0.describe())
    }
}

/// The state in memory only (the simulator's worker: its clocks live and die with the run).
#[derive(Default)]
pub struct MemoryStore(std::sync::Mutex<WorkerState>);

#[async_trait]
impl StateStore for MemoryStore {
    async fn load(&self) -> Result<WorkerState> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn save(&self, state: &WorkerState, _fencing: Option<u64>) -> Result<()> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// One JSON file, replaced atomically.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: &Path) -> Self {
        FileStore {
            path: path.to_path_buf(),
        }
    }

    fn err(&self, message: impl Into<String>) -> StateError {
        StateError::File {
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

/// The largest state file read: a few KB a target, so room for fleets of tens of thousands,
/// and a file that is not ours (a device, a log) never fills memory.
const MAX_STATE_BYTES: u64 = 256 << 20;

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self) -> Result<WorkerState> {
        let path = self.path.clone();
        let bytes = match tokio::task::spawn_blocking(move || read_bounded_bytes(&path, MAX_STATE_BYTES))
            .await
            .map_err(|e| self.err(e.to_string()))?
        {
            Ok(bytes) => bytes,
            Err(BoundedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(WorkerState::default())
            }
            Err(e) => return Err(self.err(format!("cannot read it: {e}"))),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            self.err(format!(
                "not a state ecscale can read ({e}); move it away to start with no memory of earlier ticks"
            ))
        })
    }

    async fn save(&self, state: &WorkerState, _fencing: Option<u64>) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| self.err(e.to_string()))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| self.err(e.to_string()))?
            .map_err(|e| self.err(format!("cannot write it: {e}")))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// Items in a DynamoDB table (partition key `key`, a string). Each item says when it may be
/// deleted (`delete_after`, seconds since the epoch, the table's TTL attribute; the lease's own
/// `expires` is another thing): [`KEEP`] after it was last
/// written. Items in use are written again at least every [`REFRESH`]; those of a target or
/// group no longer there stop being written and expire.
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The body last written or read and its expiry, by item key: unchanged items are not
    /// written again until their expiry needs pushing back.
    written: Mutex<HashMap<String, (String, i64)>>,
}

/// How long an item outlives its last write.
pub const KEEP: TimeDelta = TimeDelta::days(30);
/// How often an unchanged item in use is written again, pushing its expiry back.
pub const REFRESH: TimeDelta = TimeDelta::days(7);

/// Whether `body` must be written at `now`, given what was last written (its body, its expiry).
fn due(last: Option<&(String, i64)>, body: &str, now: DateTime<Utc>) -> bool {
    match last {
        Some((b, expires)) => b != body || *expires - now.timestamp() < (KEEP - REFRESH).num_seconds(),
        None => true,
    }
}

const TARGET_PREFIX: &str = "state/target/";
const GROUP_PREFIX: &str = "state/group/";
const SHIPPED_KEY: &str = "state/shipped";

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoStore {
            client,
            table: table.to_string(),
            written: Mutex::new(HashMap::new()),
        }
    }

    fn err(&self, message: impl Into<String>) -> StateError {
        StateError::Dynamo {
            table: self.table.clone(),
            message: message.into(),
        }
    }

    fn items(state: &WorkerState) -> Result<Vec<(String, String)>, serde_json::Error> {
        let mut out = Vec::new();
        for (k, v) in &state.targets {
            out.push((format!("{TARGET_PREFIX}{k}"), serde_json::to_string(v)?));
        }
        for (k, v) in &state.groups {
            out.push((format!("{GROUP_PREFIX}{k}"), serde_json::to_string(v)?));
        }
        out.push((
            SHIPPED_KEY.to_string(),
            serde_json::to_string(&state.shipped_until)?,
        ));
        Ok(out)
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn load(&self) -> Result<WorkerState> {
        let mut state = WorkerState::default();
        let mut seen = HashMap::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#k, :p)")
                .expression_attribute_names("#k", "key")
                .expression_attribute_values(":p", s("state/"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.err(format!("DynamoDB.Scan: {}", crate::aws::error_chain(&e))))?;
            for item in page.items() {
                let (Some(AttributeValue::S(key)), Some(AttributeValue::S(body))) =
                    (item.get("key"), item.get("body"))
                else {
                    continue;
                };
                // Without an expiry (written before there was one): due for a write at once.
                let expires = match item.get("delete_after") {
                    Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                    _ => 0,
                };
                if expires != 0 && expires < Utc::now().timestamp() {
                    // Expired: DynamoDB deletes it within days; until then it is gone to us.
                    continue;
                }
                let bad = |e: serde_json::Error| {
                    self.err(format!("item {key} is not a state ecscale can read: {e}"))
                };
                if let Some(t) = key.strip_prefix(TARGET_PREFIX) {
                    state
                        .targets
                        .insert(t.to_string(), serde_json::from_str(body).map_err(bad)?);
                } else if let Some(g) = key.strip_prefix(GROUP_PREFIX) {
                    state
                        .groups
                        .insert(g.to_string(), serde_json::from_str(body).map_err(bad)?);
                } else if key == SHIPPED_KEY {
                    state.shipped_until = serde_json::from_str(body).map_err(bad)?;
                }
                seen.insert(key.clone(), (body.clone(), expires));
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(state)
    }

    async fn save(&self, state: &WorkerState, fencing: Option<u64>) -> Result<()> {
        let items = Self::items(state).map_err(|e| self.err(e.to_string()))?;
        let now = Utc::now();
        let changed: Vec<(String, String)> = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            items
                .into_iter()
                .filter(|(k, b)| due(written.get(k), b, now))
                .collect()
        };
        let expires = (now + KEEP).timestamp();
        for (key, body) in changed {
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("key", s(&key))
                .item("body", s(&body))
                .item("updated_at", s(&now.to_rfc3339()))
                .item("delete_after", AttributeValue::N(expires.to_string()));
            if let Some(f) = fencing {
                put = put
                    .item("fencing", AttributeValue::N(f.to_string()))
                    .condition_expression("attribute_not_exists(fencing) OR fencing <= :f")
                    .expression_attribute_values(":f", AttributeValue::N(f.to_string()));
            }
            match put.send().await {
                Ok(_) => {
                    self.written
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key, (body, expires));
                }
                Err(e) if is_conditional_failure(&e) => {
                    return Err(StateError::Fenced {
                        table: self.table.clone(),
                        key,
                        ours: fencing.unwrap_or(0),
                    })
                }
                Err(e) => {
                    return Err(self.err(format!("DynamoDB.PutItem {key}: {}", crate::aws::error_chain(&e))))
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("DynamoDB table {}", self.table)
    }
}

/// A ConditionalCheckFailedException.
pub fn is_conditional_failure<E: aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> bool {
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_written_when_it_changed_or_its_expiry_needs_pushing_back() {
        let now = Utc::now();
        let fresh = ("a".to_string(), (now + KEEP).timestamp());
        assert!(due(None, "a", now), "never written");
        assert!(!due(Some(&fresh), "a", now), "unchanged, just written");
        assert!(due(Some(&fresh), "b", now), "changed");
        let day = TimeDelta::days(1);
        assert!(!due(Some(&fresh), "a", now + REFRESH - day));
        assert!(
            due(Some(&fresh), "a", now + REFRESH + day),
            "a week old: pushed back"
        );
        assert!(
            due(Some(&("a".to_string(), 0)), "a", now),
            "read without an expiry"
        );
    }

    #[tokio::test]
    async fn the_file_store_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("sub/state.json"));
        assert_eq!(
            store.load().await.unwrap(),
            WorkerState::default(),
            "no file: no memory"
        );
        let mut st = WorkerState::default();
        let at = Utc::now();
        st.targets.insert(
            "prod/web".into(),
            TargetRecord {
                engine: TargetState {
                    last_scale_out: Some(at),
                    ..TargetState::default()
                },
                last_action: Some(LastAction {
                    at,
                    from: 2,
                    to: 4,
                    result: "updated".into(),
                }),
            },
        );
        st.groups.insert("asg".into(), GroupState::default());
        store.save(&st, None).await.unwrap();
        assert_eq!(store.load().await.unwrap(), st);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"targets\": [").unwrap();
        let err = FileStore::new(&path).load().await.unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("move it away"),
            "{err}"
        );
    }
}
