use std::process::ExitCode;

use clap::Parser;
use pullsecret_injector::cli::{Cli, Command};
use pullsecret_injector::{cmd, install_crypto_provider, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    install_crypto_provider();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args).await,
        Command::Review(args) => cmd::review::run(args).await,
        Command::Explain(args) => cmd::explain::run(args).await,
        Command::Check(args) => cmd::check::run(args).await,
        Command::Certs(args) => cmd::certs::run(args).await,
        Command::Secret(command) => cmd::secret::run(command).await,
        Command::Audit(args) => cmd::audit::run(args).await,
        Command::Diagnose(command) => cmd::diagnose::run(command).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
