//! Container image references, parsed and normalized exactly as the kubelet does
//! (distribution/reference `ParseNormalizedNamed`).

use thiserror::Error;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Normalized registry host[:port]: `docker.io` for Docker Hub.
    pub registry: String,
    /// Path below the registry; `library/` added for single-component Docker Hub names.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name must be lowercase")]
    NameContainsUppercase,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("cannot specify 64-byte hexadecimal strings")]
    Identifier64Hex,
    #[error("invalid digest format")]
    DigestInvalidFormat,
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
}

impl ReferenceError {
    /// The distribution/reference error variable name, as used in `image_refs.json`.
    pub fn class(&self) -> &'static str {
        todo!("filled by the reference implementation")
    }
}

impl ImageRef {
    pub fn parse(_image: &str) -> Result<Self, ReferenceError> {
        todo!("filled by the reference implementation")
    }

    /// `registry/repository`: the string the kubelet hands to its keyring lookup.
    pub fn lookup_target(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}
