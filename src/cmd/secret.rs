use std::process::ExitCode;

use crate::cli::SecretCommand;

pub async fn run(_command: SecretCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`secret` is not implemented yet")
}
