//! Who may do what through the API: access roles and the caller of a request.
//!
//! Owns: [`AccessRole`] (viewer < operator < admin, ARCHITECTURE.md "HTTP: Auth") and [`Caller`],
//! the identity the HTTP layer attaches to every request and the audit log records as the actor.
//! Leaves to others: how a caller is authenticated (`http/auth.rs`) and what is recorded
//! (the audit log).

use serde::{Deserialize, Serialize};

/// What a token may do. Ordered: every role may do all that the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessRole {
    /// Read only: jobs, runs, workers, stats, audit, preview.
    Viewer,
    /// Also run now, kill, enable and disable.
    Operator,
    /// Also create, replace and delete jobs.
    Admin,
}

impl AccessRole {
    /// Lowercase name, as in config and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// The identity behind one request, as authenticated by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Caller {
    /// The token's configured name; `"anonymous"` when auth is off.
    pub name: String,
    /// What the token may do.
    pub role: AccessRole,
}

impl Caller {
    /// The caller of every request when auth is turned off (`insecure_no_auth`).
    pub fn anonymous() -> Self {
        Self { name: "anonymous".to_owned(), role: AccessRole::Admin }
    }

    /// Whether this caller may do what `needed` may.
    pub fn may(&self, needed: AccessRole) -> bool {
        self.role >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_viewer_operator_admin() {
        assert!(AccessRole::Viewer < AccessRole::Operator && AccessRole::Operator < AccessRole::Admin);
        let op = Caller { name: "ops".into(), role: AccessRole::Operator };
        assert!(op.may(AccessRole::Viewer) && op.may(AccessRole::Operator) && !op.may(AccessRole::Admin));
    }
}
