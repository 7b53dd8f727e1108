//! One module per subcommand. Each `run` returns the process exit code.

pub mod audit;
pub mod certs;
pub mod check;
pub mod diagnose;
pub mod explain;
mod list;
pub(crate) mod output;
mod policy_input;
pub mod review;
pub mod secret;
pub mod serve;

pub use output::error_chain;
