use std::process::ExitCode;

use crate::cli::CheckArgs;

pub async fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`check` is not implemented yet")
}
