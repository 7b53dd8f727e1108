use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use pullsecret_injector::cli::{Cli, Command};
use pullsecret_injector::{cmd, install_crypto_provider, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    install_crypto_provider();
    let cli = Cli::parse();
    // Kept to the end of main: dropping it writes out the log lines `serve` still has queued.
    let _log_writer = match cli.command {
        Command::Serve(_) => Some(telemetry::init_serving(cli.log_format, "info")),
        // A one-shot command reports its errors once, itself: the client library's own ERROR
        // lines about the same failure would only repeat them.
        _ => {
            telemetry::init_with_default(cli.log_format, "info,kube_client=off");
            None
        }
    };
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args).await,
        Command::Review(args) => cmd::review::run(args).await,
        Command::Explain(args) => cmd::explain::run(args).await,
        Command::Check(args) => cmd::check::run(args).await,
        Command::Certs(args) => cmd::certs::run(args).await,
        Command::Secret(command) => cmd::secret::run(command).await,
        Command::Audit(args) => cmd::audit::run(args).await,
        Command::Diagnose(command) => cmd::diagnose::run(command).await,
        Command::Completion(args) => {
            let mut command = Cli::command();
            let name = command.get_name().to_string();
            clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cmd::error_chain(&err));
            ExitCode::from(2)
        }
    }
}
