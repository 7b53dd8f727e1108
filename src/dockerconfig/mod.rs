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

pub(crate) use decode::{
    AuthEntry, Credential, DecodeProblem, DecodeProblemKind, DockerConfig, Format, decode,
};
pub(crate) use documents::{Content, Document, InputError, SecretDoc, parse_documents};
pub(crate) use go::encode_std;
pub(crate) use keyring::{BrokenConfig, SourcedCredential, build_keyring, display_key};
pub(crate) use lint::{Severity, hub_pitfall, lint};
pub(crate) use render::{NewEntry, render_config};
// The token minter's tests check the `auth` field it writes against the one encoder.
#[cfg(test)]
pub(crate) use render::encode_auth;

pub(crate) const TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub(crate) const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
pub(crate) const KEY_DOCKERCONFIGJSON: &str = ".dockerconfigjson";
pub(crate) const KEY_DOCKERCFG: &str = ".dockercfg";
/// kubectl's default server key for Docker Hub.
pub(crate) const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// The only index key the kubelet's Docker Hub fallback looks at.
pub(crate) const DOCKER_HUB_FALLBACK_INDEX_KEY: &str = crate::keyring::DEFAULT_REGISTRY_KEY;
