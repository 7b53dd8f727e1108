//! `certs`: a CA and a serving certificate for `<service>.<namespace>.svc`, for a manual install.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::CertsArgs;
use crate::tls;

pub async fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    if args.days == 0 {
        anyhow::bail!("--days must be at least 1");
    }
    let names = tls::service_names(&args.service, &args.namespace);
    let generated = tls::generate(&names, args.days)
        .with_context(|| format!("cannot generate certificates for {}", names.join(", ")))?;
    let paths = tls::write(&args.out, &generated)?;
    println!("CA certificate:      {}", paths.ca.display());
    println!(
        "serving certificate: {} (valid {} days for {})",
        paths.cert.display(),
        args.days,
        names.join(", ")
    );
    println!("private key:         {} (mode 0600)", paths.key.display());
    println!(
        "webhook caBundle:    base64 -w0 < {}   # for clientConfig.caBundle",
        paths.ca.display()
    );
    Ok(ExitCode::SUCCESS)
}
