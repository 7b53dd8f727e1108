//! The keyring a Pod gets from the configs it lists.

use thiserror::Error;

use super::{AuthEntry, Credential, DecodeProblem, DockerConfig, Document, decode};
use crate::keyring::Keyring;

/// A credential in a keyring, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourcedCredential {
    /// The document label (`Secret ns/name`).
    pub(crate) source: String,
    pub(crate) credential: Credential,
}

/// A config the kubelet would reject; a Pod listing it fails every pull.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{source_label}: {}", .problems.iter().map(describe_problem).collect::<Vec<_>>().join("; "))]
pub(crate) struct BrokenConfig {
    pub(crate) source_label: String,
    pub(crate) problems: Vec<DecodeProblem>,
}

fn describe_problem(p: &DecodeProblem) -> String {
    match &p.registry {
        Some(r) => format!("registry {}: {}", display_key(r), p.message),
        None => p.message.clone(),
    }
}

impl DockerConfig {
    /// The keyring the kubelet builds from this one config, each entry carrying what
    /// `credential` makes of it.
    pub(crate) fn keyring<C>(
        &self,
        mut credential: impl FnMut(usize, &AuthEntry) -> C,
    ) -> Keyring<C> {
        let mut ring = Keyring::new();
        ring.extend(
            self.entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.as_str(), credential(i, e))),
        );
        ring
    }
}

/// The keyring a Pod listing every document (in order) as `imagePullSecrets` would get.
pub(crate) fn build_keyring(
    docs: &[Document],
) -> Result<Keyring<SourcedCredential>, Vec<BrokenConfig>> {
    let mut ring = Keyring::new();
    let mut broken = Vec::new();
    for doc in docs {
        let Some((format, bytes)) = doc.kubelet_config() else {
            continue;
        };
        let config = decode(bytes, format);
        if config.is_broken() {
            broken.push(BrokenConfig {
                source_label: doc.label.clone(),
                problems: config.problems,
            });
            continue;
        }
        ring.extend(config.entries.into_iter().map(|entry| {
            (
                entry.key,
                SourcedCredential {
                    source: doc.label.clone(),
                    credential: entry.credential,
                },
            )
        }));
    }
    if broken.is_empty() {
        Ok(ring)
    } else {
        Err(broken)
    }
}

/// A registry key for display: userinfo (`https://user:pass@host`) is removed.
pub(crate) fn display_key(key: &str) -> String {
    let (scheme, rest) = match key.find("://") {
        Some(i) => key.split_at(i + 3),
        None => ("", key),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>@{}", &rest[at + 1..]),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_key_hides_userinfo() {
        assert_eq!(
            display_key("https://u:p@reg.io/v1/"),
            "https://<redacted>@reg.io/v1/"
        );
        assert_eq!(display_key("reg.io/a@b"), "reg.io/a@b");
    }
}
