use std::process::ExitCode;

use crate::cli::CertsArgs;

pub async fn run(_args: CertsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`certs` is not implemented yet")
}
