//! pullsecret-injector: a mutating admission webhook that gives every Pod the image pull
//! secrets its images need and keeps their copies current.

pub mod admission;
mod audit;
pub mod cli;
pub mod cmd;
pub mod coverage;
pub mod diagnose;
pub mod dockerconfig;
pub mod expiry;
pub mod facts;
mod glob;
pub mod k8s;
pub mod keyring;
pub mod kubeconfig;
pub mod metrics;
pub mod plan;
pub mod policy;
mod quote;
pub mod reference;
pub mod registry;
mod rule_index;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tokens;

pub use server::{admin_router, router};

/// Installs the one rustls crypto provider (ring) for the process. Safe to call twice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
