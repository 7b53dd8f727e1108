use std::process::ExitCode;

use crate::cli::ExplainArgs;

pub async fn run(_args: ExplainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`explain` is not implemented yet")
}
