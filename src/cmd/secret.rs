//! `secret create | lint | match | verify`: make pull Secrets the kubelet will use, say what
//! it would do with existing ones, and try them against the registry.
//!
//! Exit codes: `create` 0 / 2; `lint` 0 clean, 1 findings, 2 unusable input; `match` 0 found,
//! 1 not found, 2 bad input; `verify` 0 only when a credential authenticated and the manifest
//! exists, 1 otherwise, 2 bad input. Passwords, tokens and `auth` values are never printed.

use std::io::Read;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;
use thiserror::Error;

use crate::cli::{
    OutputFormat, SecretCommand, SecretCreateArgs, SecretLintArgs, SecretMatchArgs, SecretType,
    SecretVerifyArgs, YamlOrJson,
};
use crate::cmd::output;
use crate::dockerconfig::{
    self, BrokenConfig, Document, Format, NewEntry, Severity, SourcedCredential, display_key,
};
use crate::keyring::{self, Keyring};
use crate::reference::{DOCKER_HUB_API_HOSTS, ImageRef};
use crate::registry::{BasicAuth, ClientOptions, Outcome, RegistryClient, Target};

#[derive(Debug, Error)]
pub(crate) enum SecretError {
    #[error("cannot read {origin}: {problem}")]
    Read {
        origin: String,
        problem: std::io::Error,
    },
    #[error("{origin}: {problem}")]
    Input {
        origin: String,
        problem: dockerconfig::InputError,
    },
    #[error("{0}")]
    Usage(String),
    #[error(
        "the kubelet would fail every image pull of a Pod listing these Secrets: {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Broken(Vec<BrokenConfig>),
    #[error("invalid image {image:?}: {problem}")]
    Image {
        image: String,
        problem: crate::reference::ReferenceError,
    },
    #[error(transparent)]
    Client(#[from] crate::registry::ClientError),
}

pub async fn run(command: SecretCommand) -> anyhow::Result<ExitCode> {
    let code = match command {
        SecretCommand::Create(args) => match minted_provider(&args) {
            Some(provider) => create_minted(&args, provider?).await?,
            None => create(args)?,
        },
        SecretCommand::Lint(args) => lint(args)?,
        SecretCommand::Match(args) => match_image(args)?,
        SecretCommand::Verify(args) => verify(args).await?,
    };
    Ok(code)
}

fn read_input(input: &str) -> Result<String, SecretError> {
    let origin = if input == "-" { "stdin" } else { input };
    let mut text = String::new();
    let result = if input == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(input).map(|t| text = t)
    };
    result.map_err(|problem| SecretError::Read {
        origin: origin.to_string(),
        problem,
    })?;
    Ok(text)
}

fn read_documents(input: &str) -> Result<Vec<Document>, SecretError> {
    let text = read_input(input)?;
    dockerconfig::parse_documents(&text).map_err(|problem| SecretError::Input {
        origin: if input == "-" { "stdin" } else { input }.to_string(),
        problem,
    })
}

fn print_json(value: &impl Serialize) {
    print_structured(value, false);
}

/// `-o json` or `-o yaml`: the same document.
fn print_structured(value: &impl Serialize, yaml: bool) {
    match output::render(value, yaml) {
        Ok(s) => print!("{s}"),
        Err(e) => eprintln!("error: cannot encode the output: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// create

/// The token source `--from-ecr`, `--from-gar` or `--from-acr` asks for, validated as the
/// policy's `tokenSources` are.
fn minted_provider(
    args: &SecretCreateArgs,
) -> Option<Result<crate::policy::TokenProvider, SecretError>> {
    use crate::policy::TokenProvider;
    let provider = if let Some(region) = &args.from_ecr {
        TokenProvider::Ecr {
            region: region.clone(),
            registry_ids: args.registry_ids.clone(),
        }
    } else if !args.from_gar.is_empty() {
        TokenProvider::Google {
            registries: args.from_gar.clone(),
        }
    } else if let Some(registry) = &args.from_acr {
        TokenProvider::Azure {
            registry: registry.clone(),
        }
    } else {
        return None;
    };
    Some(match provider.problems().first() {
        Some(problem) => Err(SecretError::Usage(problem.clone())),
        None => Ok(provider),
    })
}

/// Mints with the caller's identity and prints the Secret. It carries the expiry annotation
/// but not our managed-by label: applied by hand or by GitOps, `serve` leaves it alone.
async fn create_minted(
    args: &SecretCreateArgs,
    provider: crate::policy::TokenProvider,
) -> Result<ExitCode, SecretError> {
    use crate::tokens::{self, Minter as _};
    check_name(&args.name, "Secret name")?;
    if let Some(ns) = &args.namespace {
        check_label(ns, "namespace")?;
    }
    let minter = tokens::CloudMinter::new();
    let minted = minter.mint(&provider).await.map_err(|e| {
        SecretError::Usage(format!("cannot mint a {} credential: {e}", provider.kind()))
    })?;
    let secret = tokens::build_secret(
        &args.name,
        args.namespace.as_deref().unwrap_or_default(),
        &provider,
        &minted,
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), args.name.clone().into());
    if let Some(ns) = &args.namespace {
        metadata.insert("namespace".into(), ns.clone().into());
    }
    metadata.insert(
        "annotations".into(),
        json!(secret.metadata.annotations.clone().unwrap_or_default()),
    );
    let data: serde_json::Map<String, serde_json::Value> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), dockerconfig::encode_std(&v.0).into()))
        .collect();
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": secret.type_,
        "data": data,
    });
    eprintln!(
        "minted a {} credential for {}; it expires at {}",
        provider.kind(),
        minted
            .credentials
            .iter()
            .map(|c| c.server.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        tokens::rfc3339(minted.expires_at)
    );
    print_manifest(&manifest, args.output)?;
    Ok(ExitCode::SUCCESS)
}

fn print_manifest(manifest: &serde_json::Value, output: YamlOrJson) -> Result<(), SecretError> {
    match output {
        YamlOrJson::Json => print_json(manifest),
        // One line per value, like kubectl, rather than folded block scalars.
        YamlOrJson::Yaml => match serde_saphyr::to_string_with_options(
            manifest,
            serde_saphyr::ser_options! { prefer_block_scalars: false },
        ) {
            Ok(y) => print!("{y}"),
            Err(e) => return Err(SecretError::Usage(format!("cannot write YAML: {e}"))),
        },
    }
    Ok(())
}

fn create(args: SecretCreateArgs) -> Result<ExitCode, SecretError> {
    check_name(&args.name, "Secret name")?;
    if let Some(ns) = &args.namespace {
        check_label(ns, "namespace")?;
    }
    let format = match args.secret_type {
        SecretType::Dockerconfigjson => Format::DockerConfigJson,
        SecretType::Dockercfg => Format::DockerCfg,
    };
    let entries = match &args.from_docker_config {
        Some(path) => {
            let origin = output::origin(path);
            let text = output::read_bytes(path).map_err(|problem| SecretError::Read {
                origin: origin.clone(),
                problem,
            })?;
            entries_from_docker_config(&text, args.server.as_deref(), &origin)?
        }
        None => vec![entry_from_flags(&args)?],
    };
    let config = dockerconfig::render_config(&entries, format);
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), args.name.clone().into());
    if let Some(ns) = &args.namespace {
        metadata.insert("namespace".into(), ns.clone().into());
    }
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": format.secret_type(),
        "data": { format.data_key(): dockerconfig::encode_std(config.as_bytes()) },
    });
    match args.output {
        YamlOrJson::Json => print_json(&manifest),
        // One line per value, like kubectl, rather than folded block scalars.
        YamlOrJson::Yaml => match serde_saphyr::to_string_with_options(
            &manifest,
            serde_saphyr::ser_options! { prefer_block_scalars: false },
        ) {
            Ok(y) => print!("{y}"),
            Err(e) => return Err(SecretError::Usage(format!("cannot write YAML: {e}"))),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn entry_from_flags(args: &SecretCreateArgs) -> Result<NewEntry, SecretError> {
    let (Some(username), true) = (&args.username, args.password_stdin) else {
        return Err(SecretError::Usage(
            "give --username and --password-stdin (or --from-docker-config FILE)".into(),
        ));
    };
    if username.is_empty() {
        return Err(SecretError::Usage("--username is empty".into()));
    }
    if username.contains(':') {
        return Err(SecretError::Usage(
            "--username contains `:`; `auth` is user:password split at the first `:`, so the kubelet would read a different user".into(),
        ));
    }
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| dockerconfig::DOCKER_HUB_KEY.to_string());
    check_server(&server)?;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|problem| SecretError::Read {
            origin: "stdin".into(),
            problem,
        })?;
    // `echo "$TOKEN" |` adds one newline; strip exactly that.
    if let Some(p) = password.strip_suffix('\n') {
        password = p.strip_suffix('\r').unwrap_or(p).to_string();
    }
    if password.is_empty() {
        return Err(SecretError::Usage(
            "the password read from stdin is empty".into(),
        ));
    }
    Ok(NewEntry {
        server,
        username: username.clone(),
        password,
        email: args.email.clone(),
    })
}

/// A server key the kubelet can parse and that does what it looks like it does.
fn check_server(server: &str) -> Result<(), SecretError> {
    let Some(index) = keyring::index_key(server) else {
        return Err(SecretError::Usage(format!(
            "--server {}: the kubelet cannot parse this as a URL and would skip it",
            display_key(server)
        )));
    };
    let host = index.split('/').next().unwrap_or(&index);
    if DOCKER_HUB_API_HOSTS.contains(&host)
        || (host.contains('*') && keyring::urls_match(host, "registry-1.docker.io"))
    {
        return Err(SecretError::Usage(format!(
            "--server {}: the kubelet never matches this key to Docker Hub images; use https://index.docker.io/v1/ (the default) or docker.io",
            display_key(server)
        )));
    }
    Ok(())
}

/// The lookup string for a `--server` value: Docker Hub spellings become `docker.io` so the
/// kubelet's fallback finds `https://index.docker.io/v1/`.
fn server_target(server: &str) -> Option<String> {
    let index = keyring::index_key(server)?;
    Some(match index.as_str() {
        "docker.io" | "index.docker.io" => "docker.io".to_string(),
        _ => index,
    })
}

fn entries_from_docker_config(
    bytes: &[u8],
    server: Option<&str>,
    origin: &str,
) -> Result<Vec<NewEntry>, SecretError> {
    let config = dockerconfig::decode(bytes, Format::DockerConfigJson);
    if let Some(p) = config.problems.first() {
        let at = p
            .registry
            .as_deref()
            .map(|r| format!(" (registry {})", display_key(r)))
            .unwrap_or_default();
        return Err(SecretError::Usage(format!("{origin}{at}: {}", p.message)));
    }
    let helper_for = |key: &str| -> Option<String> {
        let index = server_target(key);
        config
            .cred_helpers
            .iter()
            .find(|(r, _)| r == key || (index.is_some() && server_target(r) == index))
            .map(|(_, h)| h.clone())
            .or_else(|| config.creds_store.clone())
    };
    let selected: Vec<&dockerconfig::AuthEntry> = match server {
        None => config.entries.iter().collect(),
        Some(server) => {
            let target = server_target(server).ok_or_else(|| {
                SecretError::Usage(format!(
                    "--server {}: not a registry key the kubelet can parse",
                    display_key(server)
                ))
            })?;
            let ring = config.keyring(|i, _| i);
            let lookup = ring.lookup(&target);
            // A bare host like `gcr.io` passes isDefaultRegistryMatch; only Hub may fall back.
            let found: Vec<usize> = if lookup.via_docker_hub_fallback && target != "docker.io" {
                Vec::new()
            } else {
                lookup.matches.iter().map(|m| m.credential).collect()
            };
            if found.is_empty() {
                let message = match helper_for(server) {
                    Some(h) => format!(
                        "{origin}: the credentials for {} live in the credential helper docker-credential-{h}, not in the file; {}",
                        display_key(server),
                        helper_hint(&h, server)
                    ),
                    None => format!(
                        "{origin}: no entry in `auths` matches {} (keys: {})",
                        display_key(server),
                        config
                            .entries
                            .iter()
                            .map(|e| display_key(&e.key))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Err(SecretError::Usage(message));
            }
            found.into_iter().map(|i| &config.entries[i]).collect()
        }
    };
    if selected.is_empty() {
        let message = match (&config.creds_store, config.cred_helpers.as_slice()) {
            (_, [(registry, helper), ..]) => {
                let all: Vec<String> = config
                    .cred_helpers
                    .iter()
                    .map(|(r, h)| format!("{} -> docker-credential-{h}", display_key(r)))
                    .collect();
                format!(
                    "{origin}: `auths` is empty: the credentials live in credential helpers ({}), not in the file; {}",
                    all.join(", "),
                    helper_hint(helper, registry)
                )
            }
            (Some(h), []) => format!(
                "{origin}: `auths` is empty: the credentials live in the credential helper docker-credential-{h}, not in the file; {}",
                helper_hint(h, "<registry>")
            ),
            (None, []) => format!("{origin}: `auths` is empty"),
        };
        return Err(SecretError::Usage(message));
    }
    let mut out = Vec::new();
    let mut unusable = Vec::new();
    for e in selected {
        if e.credential.is_empty() {
            unusable.push(if !e.facts.token_fields.is_empty() {
                format!(
                    "the entry for {} holds only an identity token, which the kubelet cannot use; log in with a username and password or token",
                    display_key(&e.key)
                )
            } else if let Some(h) = helper_for(&e.key) {
                format!(
                    "the credentials for {} live in the credential helper docker-credential-{h}, not in the file; {}",
                    display_key(&e.key),
                    helper_hint(&h, &e.key)
                )
            } else {
                format!("the entry for {} has no credentials", display_key(&e.key))
            });
            continue;
        }
        out.push(NewEntry {
            server: e.key.clone(),
            username: e.credential.username.clone(),
            password: e.credential.password.clone(),
            email: Some(e.credential.email.clone()).filter(|m| !m.is_empty()),
        });
    }
    if !unusable.is_empty() {
        let hint = if server.is_none() {
            " (pick the usable registries with --server)"
        } else {
            ""
        };
        return Err(SecretError::Usage(format!(
            "{origin}: {}{hint}",
            unusable.join("; ")
        )));
    }
    Ok(out)
}

/// How to get a password the kubelet can use when a docker config keeps it in a helper:
/// the registry's own token command where the helper names one, the helper itself otherwise.
fn helper_hint(helper: &str, registry: &str) -> String {
    let registry = display_key(registry);
    let create = |user: &str| {
        format!(
            "pullsecret-injector secret create NAME --server {registry} --username {user} --password-stdin"
        )
    };
    match helper {
        "ecr-login" => format!(
            "make a Secret from a token instead: `aws ecr get-login-password | {}` (ECR tokens last 12 hours; a tokenSources entry keeps one fresh)",
            create("AWS")
        ),
        "gcloud" | "gcr" => format!(
            "make a Secret from a token instead: `gcloud auth print-access-token | {}` (the token lasts about an hour; a service account key with --username _json_key lasts)",
            create("oauth2accesstoken")
        ),
        "acr-env" | "acr" => format!(
            "make a Secret from a token instead: `az acr login --name <registry> --expose-token --output tsv --query accessToken | {}`",
            create("00000000-0000-0000-0000-000000000000")
        ),
        _ => format!(
            "read them with `echo {registry} | docker-credential-{helper} get` (JSON with Username and Secret) and pass the Secret to `{}`",
            create("<Username>")
        ),
    }
}

fn check_name(name: &str, what: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(SecretError::Usage(format!(
            "{what} {name:?} is not a valid DNS subdomain (lower case letters, digits, `-` and `.`)"
        )))
    }
}

fn check_label(name: &str, what: &str) -> Result<(), SecretError> {
    if name.len() <= 63 && !name.contains('.') {
        check_name(name, what)
    } else {
        Err(SecretError::Usage(format!(
            "{what} {name:?} is not a valid DNS label"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// lint

fn lint(args: SecretLintArgs) -> Result<ExitCode, SecretError> {
    let docs = read_documents(&args.input)?;
    let findings = dockerconfig::lint(&docs);
    let checked: Vec<&str> = docs
        .iter()
        .filter(|d| !matches!(d.content, dockerconfig::Content::Other { .. }))
        .map(|d| d.label.as_str())
        .collect();
    let skipped: Vec<String> = docs
        .iter()
        .filter_map(|d| match &d.content {
            dockerconfig::Content::Other { kind } => Some(format!("{} ({kind})", d.label)),
            _ => None,
        })
        .collect();
    match args.output {
        OutputFormat::Json | OutputFormat::Yaml => print_structured(
            &json!({
                "checked": checked,
                "skipped": skipped,
                "findings": findings,
            }),
            args.output == OutputFormat::Yaml,
        ),
        OutputFormat::Text => {
            for f in &findings {
                let sev = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                let reg = f
                    .registry
                    .as_deref()
                    .map(|r| format!(" registry {r}:"))
                    .unwrap_or_default();
                println!("{sev}: {}:{reg} {} [{}]", f.source, f.message, f.code);
            }
            for s in &skipped {
                println!("note: skipped {s}: not a Secret");
            }
            if findings.is_empty() {
                println!("ok: {} checked, no problems", checked.join(", "));
            }
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ---------------------------------------------------------------------------------------
// match

/// The string the kubelet looks up: `registry/repository` of the normalized image, or the
/// argument itself with `--raw-target`.
fn lookup_target(image: &str, raw: bool) -> Result<String, SecretError> {
    if raw {
        return Ok(image.to_string());
    }
    let parsed = ImageRef::parse(image).map_err(|problem| SecretError::Image {
        image: image.to_string(),
        problem,
    })?;
    Ok(parsed.lookup_target())
}

fn keyring_for(input: &str) -> Result<Keyring<SourcedCredential>, SecretError> {
    let docs = read_documents(input)?;
    dockerconfig::build_keyring(&docs).map_err(SecretError::Broken)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MatchJson<'a> {
    image: &'a str,
    lookup_target: &'a str,
    found: bool,
    via_docker_hub_fallback: bool,
    matches: Vec<MatchEntryJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MatchEntryJson<'a> {
    key: String,
    index_key: &'a str,
    username: &'a str,
    /// The Secret (or file) the credential comes from.
    source: &'a str,
}

fn match_image(args: SecretMatchArgs) -> Result<ExitCode, SecretError> {
    let target = lookup_target(&args.image, args.raw_target)?;
    let ring = keyring_for(&args.input)?;
    let lookup = ring.lookup(&target);
    let found = !lookup.matches.is_empty();
    match args.output {
        OutputFormat::Json | OutputFormat::Yaml => print_structured(
            &MatchJson {
                image: &args.image,
                lookup_target: &target,
                found,
                via_docker_hub_fallback: lookup.via_docker_hub_fallback,
                matches: lookup
                    .matches
                    .iter()
                    .map(|e| MatchEntryJson {
                        key: display_key(&e.key),
                        index_key: &e.index_key,
                        username: &e.credential.credential.username,
                        source: &e.credential.source,
                    })
                    .collect(),
            },
            args.output == OutputFormat::Yaml,
        ),
        OutputFormat::Text => {
            println!("image {} -> lookup target {target}", args.image);
            if !found {
                println!(
                    "no credential matches: the kubelet pulls anonymously (or with the node's own credentials)"
                );
            } else {
                if lookup.via_docker_hub_fallback {
                    println!(
                        "no key matches directly; the Docker Hub fallback offers the `index.docker.io` credentials"
                    );
                }
                println!("the kubelet tries, in this order:");
                for (i, e) in lookup.matches.iter().enumerate() {
                    let user = &e.credential.credential.username;
                    let who = if user.is_empty() {
                        "an empty username and password".to_string()
                    } else {
                        format!("user {user}")
                    };
                    println!(
                        "  {}. {who} from {} (key {}, index key {})",
                        i + 1,
                        e.credential.source,
                        display_key(&e.key),
                        e.index_key
                    );
                }
            }
        }
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ---------------------------------------------------------------------------------------
// verify

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    result: &'static str,
    message: String,
}

async fn verify(args: SecretVerifyArgs) -> Result<ExitCode, SecretError> {
    let image = ImageRef::parse(&args.image).map_err(|problem| SecretError::Image {
        image: args.image.clone(),
        problem,
    })?;
    let lookup = image.lookup_target();
    let ring = keyring_for(&args.input)?;
    let ca_pem = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|problem| SecretError::Read {
            origin: path.display().to_string(),
            problem,
        })?),
        None => None,
    };
    let client = RegistryClient::new(&ClientOptions {
        ca_pem,
        insecure_skip_tls_verify: args.insecure_skip_tls_verify,
        plain_http: args.plain_http,
        timeout: Some(args.timeout),
    })?;
    let target = Target::from_image(&image);
    let found = ring.lookup(&lookup);
    let mut attempts = Vec::new();
    let mut ok = false;
    if found.matches.is_empty() {
        let outcome = client.check(&target, None).await;
        attempts.push(AttemptJson {
            key: None,
            username: None,
            source: None,
            result: outcome.code(),
            message: format!(
                "no credential in the input matches {lookup}, so the kubelet pulls anonymously: {}",
                outcome.explain(&target)
            ),
        });
    }
    for e in &found.matches {
        let cred = &e.credential.credential;
        let auth = BasicAuth {
            username: cred.username.clone(),
            password: cred.password.clone(),
        };
        // An empty credential (e.g. an entry with only `identitytoken`) reaches the runtime
        // as no credential at all: the pull is anonymous.
        let outcome = if cred.is_empty() {
            client.check(&target, None).await
        } else {
            client.check(&target, Some(&auth)).await
        };
        let success = matches!(outcome, Outcome::Found { .. });
        attempts.push(AttemptJson {
            key: Some(display_key(&e.key)),
            username: Some(cred.username.clone()),
            source: Some(e.credential.source.clone()),
            result: outcome.code(),
            message: outcome.explain(&target),
        });
        if success {
            ok = true;
            // The runtime stops at the first credential that works.
            break;
        }
    }
    match args.output {
        OutputFormat::Json | OutputFormat::Yaml => print_structured(
            &json!({
                "image": args.image,
                "lookupTarget": lookup,
                "registryHost": target.host,
                "authenticated": ok,
                "attempts": attempts,
            }),
            args.output == OutputFormat::Yaml,
        ),
        OutputFormat::Text => {
            println!(
                "image {} -> {}/{} at {}",
                args.image, target.host, target.repository, target.reference
            );
            for a in &attempts {
                match (&a.username, &a.source, &a.key) {
                    (Some(user), Some(source), Some(key)) => {
                        println!("user {user} from {source} (key {key}): {}", a.message)
                    }
                    _ => println!("{}", a.message),
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
