//! The kubelet's credential matching (`pkg/credentialprovider` BasicDockerKeyring):
//! `auths` keys become index keys, index keys are matched against `registry/repository`
//! with URLsMatch, and Lookup returns every match in reverse byte order, else the
//! Docker Hub fallback.

/// The index key the kubelet derives from an `auths` key, or `None` when it skips the key
/// (its URL does not parse).
pub fn index_key(_auths_key: &str) -> Option<String> {
    todo!("filled by the keyring implementation")
}

/// URLsMatch: does index key (glob) `glob` match lookup target `target`?
pub fn urls_match(_glob: &str, _target: &str) -> bool {
    todo!("filled by the keyring implementation")
}

/// isDefaultRegistryMatch.
pub fn is_default_registry_match(_target: &str) -> bool {
    todo!("filled by the keyring implementation")
}

/// One credential as the keyring holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<C> {
    /// The `auths` key as written in the config.
    pub key: String,
    /// The key after the kubelet's normalization.
    pub index_key: String,
    pub credential: C,
}

/// What `Lookup` returns: matches in the order the kubelet tries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup<'a, C> {
    pub matches: Vec<&'a Entry<C>>,
    pub via_docker_hub_fallback: bool,
}

/// A keyring: credentials added in order (pod secret order, then key order), looked up
/// by the normalized `registry/repository`.
#[derive(Debug, Clone)]
pub struct Keyring<C> {
    entries: Vec<Entry<C>>,
}

impl<C> Default for Keyring<C> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<C> Keyring<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one `auths` entry; returns false (and adds nothing) when the kubelet would skip the key.
    pub fn add(&mut self, _auths_key: &str, _credential: C) -> bool {
        todo!("filled by the keyring implementation")
    }

    pub fn lookup(&self, _target: &str) -> Lookup<'_, C> {
        todo!("filled by the keyring implementation")
    }

    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }
}
