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
    if let Err(why) = crate::policy::dns_subdomain(&args.cluster_domain) {
        anyhow::bail!(
            "--cluster-domain {:?} is not a DNS name: {why}",
            args.cluster_domain
        );
    }
    // Never replace a CA silently: the caBundle in the webhook configuration trusts it.
    let existing: Vec<String> = [tls::CA_FILE, tls::CERT_FILE, tls::KEY_FILE]
        .iter()
        .map(|file| args.out.join(file))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        anyhow::bail!(
            "{} already exist{}; pass --force to replace {} (the webhook's caBundle must then be updated too)",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" }
        );
    }
    let svc = format!("{}.{}.svc", args.service, args.namespace);
    let mut names: Vec<String> = tls::service_names(&args.service, &args.namespace)
        .into_iter()
        .filter(|name| !name.starts_with(&format!("{svc}.")))
        .collect();
    names.push(format!("{svc}.{}", args.cluster_domain));
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
        // No `-w0`: macOS base64 has no such flag; `tr` makes it one line everywhere.
        "webhook caBundle:    base64 < {} | tr -d '\\n'   # for clientConfig.caBundle",
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
