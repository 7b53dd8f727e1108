use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::CheckArgs;
use crate::policy::{Policy, PolicyError};

/// Reads and compiles a policy file; the outer error is an unreadable file.
pub fn read_policy(path: &Path) -> anyhow::Result<Result<Policy, PolicyError>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Policy::parse(&text, &path.display().to_string()))
}

/// Reads a policy for a command that needs a valid one: problems go to stderr, exit code 2.
pub fn require_policy(path: &Path) -> anyhow::Result<Result<Policy, ExitCode>> {
    Ok(read_policy(path)?.map_err(|PolicyError(problems)| {
        for problem in problems {
            eprintln!("{problem}");
        }
        ExitCode::from(2)
    }))
}

/// `check`: exit 0 and a one-line summary on stdout when the policy is valid; otherwise
/// exit 1 and one `FILE:LINE:COL: message` line per problem on stdout.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match read_policy(&args.policy)? {
        Ok(policy) => {
            let secrets = policy.secret_names();
            println!(
                "{}: ok: {} rule{}, {} secret{} from namespace {}",
                args.policy.display(),
                policy.rules.len(),
                if policy.rules.len() == 1 { "" } else { "s" },
                secrets.len(),
                if secrets.len() == 1 { "" } else { "s" },
                policy.source_namespace
            );
            for source in &policy.token_sources {
                let used = policy.rules.iter().any(|r| r.secret == source.secret);
                println!(
                    "token source {}: {} ({}){}",
                    source.secret,
                    source.provider.kind(),
                    source.provider.fingerprint(),
                    if used {
                        ""
                    } else {
                        "; no rule hands it out yet"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PolicyError(problems)) => {
            for problem in problems {
                println!("{problem}");
            }
            Ok(ExitCode::from(1))
        }
    }
}
