//! The policy document (`policy.yaml`): parsed, validated, compiled into a matcher.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// One problem in a policy document, located for `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct PolicyProblem {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in a document (at least one).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError(pub Vec<PolicyProblem>);

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Registry patterns as written (kubelet matchImages syntax).
    pub registries: Vec<String>,
    /// Secret name in the source namespace.
    pub secret: String,
}

/// A validated, compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub source_namespace: String,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Parses, validates and compiles `text`; `origin` names the file (or ConfigMap) in errors.
    pub fn parse(_text: &str, _origin: &str) -> Result<Self, PolicyError> {
        todo!("filled by the policy implementation")
    }

    /// Every secret name the policy can hand out (what the cluster side watches).
    pub fn secret_names(&self) -> BTreeSet<String> {
        self.rules.iter().map(|r| r.secret.clone()).collect()
    }

    /// Whether `namespace` is excluded from injection altogether.
    pub fn namespace_excluded(&self, _namespace: &str, _webhook_namespace: &str) -> bool {
        todo!("filled by the policy implementation")
    }

    /// Rules whose registries match `lookup_target` and whose namespace filters admit the
    /// namespace, in rule order.
    pub fn matching_rules<'a>(
        &'a self,
        _lookup_target: &str,
        _namespace: &str,
        _labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<&'a Rule> {
        todo!("filled by the policy implementation")
    }
}
