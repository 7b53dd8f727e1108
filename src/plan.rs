//! PURE: (policy, namespace, pod) -> the patch, the secrets the namespace must hold, warnings.
//! No I/O, no async: `serve`, `review` and `explain` all call this.

/// A secret the Pod is given and its namespace must hold (copied from the source namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretNeed {
    /// Secret name (the same in the source and the target namespace).
    pub name: String,
    pub source_namespace: String,
    /// Rules that asked for it, in rule order.
    pub rules: Vec<String>,
}

/// The decision for one Pod.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// RFC 6902 patch; empty when nothing changes.
    pub patch: json_patch::Patch,
    /// Secrets to ensure in the Pod's namespace (also those the Pod already referenced
    /// when a rule names them).
    pub secrets: Vec<SecretNeed>,
    pub warnings: Vec<String>,
}
