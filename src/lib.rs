//! pullsecret-injector: a mutating admission webhook that gives every Pod the image pull
//! secrets its images need and keeps their copies current.

// STYLE.md habit 10: a `pub` item that outside code cannot reach should say `pub(crate)`.
#![warn(unreachable_pub)]

pub mod admission;
pub mod audit;
pub mod cli;
pub mod cmd;
mod coverage;
mod diagnose;
mod dockerconfig;
mod expiry;
mod facts;
mod glob;
pub mod k8s;
pub mod keyring;
mod kubeconfig;
mod metrics;
pub mod plan;
pub mod policy;
mod quote;
pub mod reference;
mod registry;
mod rule_index;
mod server;
pub mod state;
pub mod telemetry;
mod tls;
mod tokens;

pub use server::router;

/// Installs the one rustls crypto provider (ring) for the process. Safe to call twice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
