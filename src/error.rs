//! Startup errors: everything that stops distcron before it serves (config, role, bind, backends).

use crate::backend::BackendError;
use crate::config::ConfigError;

/// Why distcron could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The role needs backends that are not configured or not built yet.
    #[error("{0}")]
    Role(String),
    /// A backend could not be opened.
    #[error("cannot open backends")]
    Backend(#[from] BackendError),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Authentication or TLS set-up refused (token sources, `insecure_no_auth`, certificates).
    #[error("{0}")]
    Auth(String),
    /// Something else at startup (data dir, node id).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
