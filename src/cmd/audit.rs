use std::process::ExitCode;

use crate::cli::AuditArgs;

pub async fn run(_args: AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`audit` is not implemented yet")
}
