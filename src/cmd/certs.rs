//! `certs`: a CA and a serving certificate for `<service>.<namespace>.svc`, for a manual install.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::CertsArgs;
use crate::tls;

pub async fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    if args.days == 0 {
        anyhow::bail!("--days must be at least 1");
    }
    for (flag, value) in [
        ("--service", &args.service),
        ("--namespace", &args.namespace),
    ] {
        if !is_dns_label(value) {
            anyhow::bail!(
                "{flag} {value:?} is not a DNS label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
            );
        }
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

/// RFC 1123 label, as Kubernetes requires for Service and Namespace names.
fn is_dns_label(s: &str) -> bool {
    crate::policy::dns_label(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::is_dns_label;

    #[test]
    fn service_and_namespace_must_be_dns_labels() {
        for good in ["a", "pullsecret-injector", "ns1", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
