//! Registry credential configs exactly as the kubelet reads them.
//!
//! `.dockerconfigjson` (`{"auths": {...}}`) and legacy `.dockercfg` (the bare registry map)
//! are decoded the way Go's `encoding/json` decodes them into the kubelet's structs: field
//! names match case-insensitively, the last duplicate wins, wrong JSON types are errors, and
//! `auth` (base64 of `user:password`) overrides `username`/`password`. Secret manifests
//! (YAML or JSON, several documents, a `v1` List) and bare docker configs are read into
//! [`Document`]s; [`lint`] says what the kubelet would do with them, [`build_keyring`] gives
//! the keyring a Pod listing all of them would get.
//!
//! Nothing here keeps or prints a password, token or `auth` value outside [`Credential`],
//! whose `Debug` redacts them.

mod decode;
mod documents;
mod go;
mod keyring;
mod lint;
mod render;

pub use decode::{
    AuthEntry, AuthError, Credential, DecodeProblem, DecodeProblemKind, DockerConfig, EntryFacts,
    Format, decode, decode_auth,
};
pub use documents::{Content, Document, InputError, SecretDoc, parse_documents};
pub use go::{Json, decode_secret_data, encode_std};
pub use keyring::{BrokenConfig, SourcedCredential, build_keyring, display_key};
pub use lint::{Finding, Severity, lint};
pub use render::{NewEntry, encode_auth, render_config};

pub const TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub const KEY_DOCKERCONFIGJSON: &str = ".dockerconfigjson";
pub const KEY_DOCKERCFG: &str = ".dockercfg";
/// kubectl's default server key for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// The only index key the kubelet's Docker Hub fallback looks at.
pub const DOCKER_HUB_FALLBACK_INDEX_KEY: &str = "index.docker.io";
