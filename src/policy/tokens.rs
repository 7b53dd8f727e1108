//! `tokenSources`: Secrets in the source namespace that `serve` keeps filled with freshly minted
//! registry credentials (ECR, Artifact Registry / GCR, ACR). Parsed with the rest of the policy,
//! validated here with located messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Problems, dns_subdomain};

/// A validated token source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenSource {
    /// Secret name in the source namespace.
    pub(crate) secret: String,
    pub(crate) provider: TokenProvider,
}

/// Which cloud mints the credential, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenProvider {
    /// ECR `GetAuthorizationToken` in `region`; `registry_ids` empty = the caller's account.
    Ecr {
        region: String,
        registry_ids: Vec<String>,
    },
    /// An OAuth access token for each of `registries` (user `oauth2accesstoken`).
    Google { registries: Vec<String> },
    /// An ACR refresh token for `registry` from its `/oauth2/exchange`.
    Azure { registry: String },
}

impl TokenProvider {
    /// Short name used in the Secret's annotation, metrics and messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TokenProvider::Ecr { .. } => "ecr",
            TokenProvider::Google { .. } => "google",
            TokenProvider::Azure { .. } => "azure",
        }
    }

    /// What is wrong with a provider given outside a policy (`secret create --from-*`), in the
    /// words `check` uses.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            TokenProvider::Ecr {
                region,
                registry_ids,
            } => {
                if !is_aws_region(region) {
                    out.push(format!(
                        "{region:?} is not an AWS region name like eu-west-1"
                    ));
                }
                for id in registry_ids {
                    if !is_account_id(id) {
                        out.push(format!("{id:?} is not a 12-digit AWS account id"));
                    }
                }
            }
            TokenProvider::Google { registries } => {
                for registry in registries {
                    if let Err(why) = registry_host(registry) {
                        out.push(format!("registry {registry:?} {why}"));
                    }
                }
            }
            TokenProvider::Azure { registry } => {
                if let Err(why) = registry_host(registry) {
                    out.push(format!("registry {registry:?} {why}"));
                }
            }
        }
        out
    }

    /// A stable text of what is minted: a Secret minted for another configuration (region,
    /// registries) is not fresh for this one.
    pub(crate) fn fingerprint(&self) -> String {
        match self {
            TokenProvider::Ecr {
                region,
                registry_ids,
            } => format!("ecr:{region}:{}", registry_ids.join(",")),
            TokenProvider::Google { registries } => format!("google:{}", registries.join(",")),
            TokenProvider::Azure { registry } => format!("azure:{registry}"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTokenSource {
    secret: Spanned<String>,
    #[serde(default)]
    ecr: Option<Spanned<RawEcr>>,
    #[serde(default)]
    google: Option<Spanned<RawGoogle>>,
    #[serde(default)]
    azure: Option<Spanned<RawAzure>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEcr {
    region: Spanned<String>,
    #[serde(default)]
    registry_ids: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGoogle {
    registries: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAzure {
    registry: Spanned<String>,
}

/// Field names per mapping, for the unknown-field pass.
pub(super) const SOURCE_FIELDS: &[&str] = &["secret", "ecr", "google", "azure"];
pub(super) const ECR_FIELDS: &[&str] = &["region", "registryIds"];
pub(super) const GOOGLE_FIELDS: &[&str] = &["registries"];
pub(super) const AZURE_FIELDS: &[&str] = &["registry"];

pub(super) fn compile(
    raw: Vec<Spanned<RawTokenSource>>,
    problems: &mut Problems<'_>,
) -> Vec<TokenSource> {
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for spanned in raw {
        let source = spanned.value;
        let name = &source.secret;
        if let Err(why) = dns_subdomain(&name.value) {
            problems.at(
                name,
                format!(
                    "tokenSources: secret {:?} is not a valid Secret name: {why}",
                    name.value
                ),
            );
        }
        if let Some((line, column)) = seen.get(&name.value) {
            problems.at(
                name,
                format!(
                    "tokenSources: secret {:?} is already a token source (line {line}, column {column})",
                    name.value
                ),
            );
        } else {
            seen.insert(
                name.value.clone(),
                (
                    name.referenced.line() as usize,
                    name.referenced.column() as usize,
                ),
            );
        }
        let given = [
            source.ecr.is_some(),
            source.google.is_some(),
            source.azure.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            problems.at(
                name,
                format!(
                    "tokenSources: secret {:?} needs exactly one of ecr, google, azure ({given} given)",
                    name.value
                ),
            );
            continue;
        }
        let provider = if let Some(ecr) = source.ecr {
            ecr_provider(&name.value, ecr.value, problems)
        } else if let Some(google) = source.google {
            google_provider(&name.value, google.value, problems)
        } else if let Some(azure) = source.azure {
            azure_provider(&name.value, azure.value, problems)
        } else {
            continue;
        };
        out.push(TokenSource {
            secret: name.value.clone(),
            provider,
        });
    }
    out
}

fn ecr_provider(secret: &str, raw: RawEcr, problems: &mut Problems<'_>) -> TokenProvider {
    let region = &raw.region;
    if !is_aws_region(&region.value) {
        problems.at(
            region,
            format!(
                "tokenSources {secret:?}: ecr.region {:?} is not an AWS region name like eu-west-1",
                region.value
            ),
        );
    }
    for id in &raw.registry_ids {
        if !is_account_id(&id.value) {
            problems.at(
                id,
                format!(
                    "tokenSources {secret:?}: ecr.registryIds: {:?} is not a 12-digit AWS account id",
                    id.value
                ),
            );
        }
    }
    TokenProvider::Ecr {
        region: raw.region.value,
        registry_ids: raw.registry_ids.into_iter().map(|s| s.value).collect(),
    }
}

fn google_provider(secret: &str, raw: RawGoogle, problems: &mut Problems<'_>) -> TokenProvider {
    if raw.registries.value.is_empty() {
        problems.at(
            &raw.registries,
            format!(
                "tokenSources {secret:?}: google.registries is empty; list the registry hosts, e.g. europe-docker.pkg.dev"
            ),
        );
    }
    for registry in &raw.registries.value {
        if let Err(why) = registry_host(&registry.value) {
            problems.at(
                registry,
                format!(
                    "tokenSources {secret:?}: google.registries: {:?} {why}",
                    registry.value
                ),
            );
        }
    }
    TokenProvider::Google {
        registries: raw.registries.value.into_iter().map(|s| s.value).collect(),
    }
}

fn azure_provider(secret: &str, raw: RawAzure, problems: &mut Problems<'_>) -> TokenProvider {
    if let Err(why) = registry_host(&raw.registry.value) {
        problems.at(
            &raw.registry,
            format!(
                "tokenSources {secret:?}: azure.registry {:?} {why}",
                raw.registry.value
            ),
        );
    } else if raw.registry.value.contains('/') {
        problems.at(
            &raw.registry,
            format!(
                "tokenSources {secret:?}: azure.registry {:?} is a registry host, without a path (acme.azurecr.io)",
                raw.registry.value
            ),
        );
    }
    TokenProvider::Azure {
        registry: raw.registry.value,
    }
}

fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`: lowercase words and a number, dash-separated.
fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// A registry as the kubelet keys it in a docker config: a host, optionally with a port and a
/// path; no scheme, no glob (a minted credential is for one real registry).
fn registry_host(registry: &str) -> Result<(), &'static str> {
    if registry.is_empty() {
        return Err("is empty");
    }
    if registry.contains("://") {
        return Err("has a scheme; write the host only");
    }
    if registry.contains(['*', '?', '[']) {
        return Err("is a pattern; a token source names one registry host");
    }
    let host = registry.split('/').next().unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("is not a registry host name (lowercase letters, digits, '-' and '.')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::policy::{Policy, PolicyError};

    use super::*;

    fn parse(text: &str) -> Result<Policy, Vec<String>> {
        Policy::parse(text, "policy.yaml")
            .map_err(|PolicyError(found)| found.iter().map(ToString::to_string).collect())
    }

    const GOOD: &str = "\
sourceNamespace: registry-credentials
tokenSources:
  - secret: ecr-pull
    ecr:
      region: eu-west-1
      registryIds: [\"123456789012\"]
  - secret: gar-pull
    google:
      registries: [\"europe-docker.pkg.dev\", \"gcr.io\"]
  - secret: acr-pull
    azure:
      registry: acme.azurecr.io
rules:
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
";

    #[test]
    fn the_issue_example_compiles() {
        let policy = parse(GOOD).unwrap();
        assert_eq!(
            policy.token_sources,
            vec![
                TokenSource {
                    secret: "ecr-pull".into(),
                    provider: TokenProvider::Ecr {
                        region: "eu-west-1".into(),
                        registry_ids: vec!["123456789012".into()]
                    }
                },
                TokenSource {
                    secret: "gar-pull".into(),
                    provider: TokenProvider::Google {
                        registries: vec!["europe-docker.pkg.dev".into(), "gcr.io".into()]
                    }
                },
                TokenSource {
                    secret: "acr-pull".into(),
                    provider: TokenProvider::Azure {
                        registry: "acme.azurecr.io".into()
                    }
                },
            ]
        );
        // Token Secrets are watched even when no rule hands them out yet.
        let names: Vec<String> = policy.secret_names().into_iter().collect();
        assert_eq!(names, vec!["acr-pull", "ecr-pull", "gar-pull"]);
        assert!(policy.token_source("gar-pull").is_some());
        assert!(policy.token_source("other").is_none());
    }

    #[test]
    fn every_problem_is_located() {
        let text = "\
sourceNamespace: creds
tokenSources:
  - secret: Bad_Name
    ecr: {region: eu-west-1}
  - secret: two
    ecr: {region: Europe, registryIds: [\"12\"]}
    google: {registries: [gcr.io]}
  - secret: gar
    google: {registries: []}
  - secret: gar
    google: {registries: [\"https://gcr.io\", \"*.pkg.dev\"]}
  - secret: acr
    azure: {registry: acme.azurecr.io/team}
  - secret: none
";
        let found = parse(text).unwrap_err();
        let expected = [
            "policy.yaml:3:13: tokenSources: secret \"Bad_Name\" is not a valid Secret name",
            "policy.yaml:5:13: tokenSources: secret \"two\" needs exactly one of ecr, google, azure (2 given)",
            "policy.yaml:9:26: tokenSources \"gar\": google.registries is empty",
            "policy.yaml:10:13: tokenSources: secret \"gar\" is already a token source (line 8, column 13)",
            "policy.yaml:11:27: tokenSources \"gar\": google.registries: \"https://gcr.io\" has a scheme",
            "policy.yaml:11:45: tokenSources \"gar\": google.registries: \"*.pkg.dev\" is a pattern",
            "policy.yaml:13:23: tokenSources \"acr\": azure.registry \"acme.azurecr.io/team\" is a registry host, without a path",
            "policy.yaml:14:13: tokenSources: secret \"none\" needs exactly one of ecr, google, azure (0 given)",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (got, want) in found.iter().zip(expected) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn bad_region_and_account_are_reported() {
        let text = "sourceNamespace: creds\ntokenSources:\n  - secret: e\n    ecr: {region: Europe, registryIds: [\"12\"]}\n";
        let found = parse(text).unwrap_err();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("policy.yaml:4:19: ") && found[0].contains("AWS region"));
        assert!(
            found[1].starts_with("policy.yaml:4:41: ") && found[1].contains("12-digit"),
            "{found:#?}"
        );
    }

    #[test]
    fn unknown_token_source_fields_are_reported() {
        let text = "sourceNamespace: creds\ntokenSources:\n  - secret: e\n    ecr: {region: eu-west-1, account: x}\n    gke: {}\n";
        let found = parse(text).unwrap_err();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("policy.yaml:4:30: unknown field `account`"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("policy.yaml:5:5: unknown field `gke`"),
            "{found:#?}"
        );
    }

    #[test]
    fn regions() {
        for ok in ["eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-5"] {
            assert!(is_aws_region(ok), "{ok}");
        }
        for bad in ["", "eu", "eu-west", "EU-west-1", "eu-west-x", "eu--1"] {
            assert!(!is_aws_region(bad), "{bad}");
        }
    }
}
