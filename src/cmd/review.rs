use std::process::ExitCode;

use crate::cli::ReviewArgs;

pub async fn run(_args: ReviewArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`review` is not implemented yet")
}
