//! Worker identity and the information a worker publishes about itself (membership).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Stable identity of a worker node (persisted in `data_dir` so a restart keeps it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct WorkerId(pub String);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a live worker publishes through membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: WorkerId,
    /// Host name of the machine it runs on.
    pub hostname: String,
    /// Address the seed's `/worker/list` shows (first non-loopback IPv4, else the listen host).
    pub address: String,
    /// distcron version.
    pub version: String,
    /// When this worker process started.
    pub started_at: DateTime<Utc>,
    /// Runs in progress on this worker.
    pub running: u32,
    /// Executor pool size.
    pub capacity: u32,
    /// Last heartbeat written.
    pub last_heartbeat: DateTime<Utc>,
    /// Labels (config `labels`) a job's `selector` is matched against; absent in records of
    /// older nodes and of the seed's workers (= none).
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>, example = json!({"zone": "a"}))]
    pub labels: super::Labels,
    /// Base URL of this worker's listener (`http://10.0.0.5:8070`), where the master proxies
    /// live run output; absent in records of older versions and of the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
}
