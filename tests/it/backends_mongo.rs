//! (filled by the cluster/backends work)
