//! `secret verify` against a real distribution registry (Debian `docker-registry`):
//! a Secret made by `secret create` authenticates with `skopeo --authfile` and with
//! `verify`; wrong passwords, missing repository access, missing manifests, unknown CAs and
//! closed ports are each reported in plain words. The Bearer flow runs through a token
//! server whose JWTs the registry verifies.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::Value;
use support::cli;
use support::registry::{
    Auth, Grant, Registry, TokenServer, push_image, require_tool, self_signed_ca_tls, tls_files,
};

/// `secret create` for one registry; returns the manifest (YAML).
fn create_secret(server: &str, user: &str, password: &str) -> Vec<u8> {
    let out = cli::run(
        &[
            "secret",
            "create",
            "regcred",
            "--server",
            server,
            "--username",
            user,
            "--password-stdin",
        ],
        format!("{password}\n").as_bytes(),
    );
    cli::assert_exit(&out, 0);
    out.stdout
}

/// The `.dockerconfigjson` of a created manifest, written to a file for `--authfile`.
fn authfile(manifest: &[u8]) -> tempfile::NamedTempFile {
    let text = String::from_utf8(manifest.to_vec()).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(".dockerconfigjson:"))
        .expect("a .dockerconfigjson line");
    let config = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&config).unwrap();
    f
}

fn skopeo_inspect(authfile: &std::path::Path, reference: &str) -> Output {
    Command::new(require_tool("skopeo"))
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
        ])
        .arg(authfile)
        .arg(format!("docker://{reference}"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `secret verify -o json`; returns (exit code, report).
fn verify(image: &str, manifest: &[u8], extra: &[&str]) -> (i32, Value) {
    let (code, report, _) = verify_with_stderr(image, manifest, extra);
    (code, report)
}

/// [`verify`], and what it wrote to stderr.
fn verify_with_stderr(image: &str, manifest: &[u8], extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "secret",
        "verify",
        "--image",
        image,
        "-o",
        "json",
        "--timeout",
        "10s",
    ];
    args.extend_from_slice(extra);
    args.push("-");
    let out = cli::run(&args, manifest);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An expected failure is reported once, by us: exit 1, the given result, a one-line message
/// that says `needle`, and nothing on stderr (no ERROR or WARN line from a dependency).
fn assert_one_line_failure(
    (code, report, stderr): (i32, Value, String),
    result: &str,
    needle: &str,
) -> String {
    let (got, message) = result_of(&report);
    assert_eq!((code, got), (1, result), "{report}");
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
    assert!(!message.contains('\n'), "one line: {message:?}");
    assert_eq!(stderr, "", "stderr carries only our own lines, here none");
    message.to_string()
}

fn result_of(report: &Value) -> (&str, &str) {
    let last = report["attempts"].as_array().unwrap().last().unwrap();
    (
        last["result"].as_str().unwrap(),
        last["message"].as_str().unwrap(),
    )
}

#[test]
fn created_secret_authenticates_with_skopeo_and_verify_basic_auth() {
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "wonder:land")]), None);
    let host = reg.host();
    let digest = push_image(&format!("{host}/team/app:v1"), ("alice", "wonder:land"));

    let manifest = create_secret(&host, "alice", "wonder:land");
    assert_eq!(
        cli::run(&["secret", "lint", "-"], &manifest).status.code(),
        Some(0)
    );
    let image = format!("{host}/team/app:v1");
    assert_eq!(
        cli::run(&["secret", "match", "--image", &image, "-"], &manifest)
            .status
            .code(),
        Some(0)
    );

    // The runtime's view: skopeo reads the .dockerconfigjson as an authfile.
    let auth = authfile(&manifest);
    let out = skopeo_inspect(auth.path(), &image);
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, report) = verify(&image, &manifest, &["--plain-http"]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (0, "authenticated"), "{report}");
    assert!(message.contains("Basic"), "{message}");
    assert!(
        message.contains(&digest),
        "reports the manifest digest: {message}"
    );
    assert_eq!(report["authenticated"], true);

    let (code, report) = verify(&format!("{host}/team/app:v2"), &manifest, &["--plain-http"]);
    assert_eq!(
        (code, result_of(&report).0),
        (1, "manifest-not-found"),
        "{report}"
    );

    // A wrong password: the registry answers 401; skopeo agrees.
    let wrong = create_secret(&host, "alice", "nope");
    let (code, report) = verify(&image, &wrong, &["--plain-http"]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (1, "bad-credentials"), "{report}");
    assert!(message.contains("401"), "{message}");
    let wrong_auth = authfile(&wrong);
    assert!(!skopeo_inspect(wrong_auth.path(), &image).status.success());

    // No matching secret at all: anonymous, and the registry wants credentials.
    let other = create_secret("other.example.com", "alice", "x");
    let (code, report) = verify(&image, &other, &["--plain-http"]);
    assert_eq!(
        (code, result_of(&report).0),
        (1, "auth-required"),
        "{report}"
    );

    // Like the runtime, later matches are tried when an earlier one fails: the longer key
    // (`host/team`, wrong password) comes first in the kubelet's order, then `host`.
    let mut both = create_secret(&format!("{host}/team"), "alice", "stale");
    both.extend_from_slice(b"---\n");
    both.extend_from_slice(&manifest);
    let (code, report) = verify(&image, &both, &["--plain-http"]);
    let results: Vec<&str> = cli::strings_in(&report, "attempts", "result");
    assert_eq!(
        (code, results),
        (0, vec!["bad-credentials", "authenticated"]),
        "{report}"
    );

    let text = cli::run(
        &["secret", "verify", "--image", &image, "--plain-http", "-"],
        &manifest,
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("authenticated") && !text.contains("wonder:land"),
        "{text}"
    );
}

#[test]
fn tls_registry_needs_its_ca() {
    let tls = tls_files();
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), Some(&tls));
    let host = reg.host();
    push_image(&format!("{host}/team/app:v1"), ("alice", "pw"));
    let manifest = create_secret(&host, "alice", "pw");
    let image = format!("{host}/team/app:v1");

    let (code, report) = verify(&image, &manifest, &[]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (1, "tls-error"), "{report}");
    assert!(
        message.contains("--ca-file"),
        "suggests --ca-file: {message}"
    );

    let ca = tls.ca.to_str().unwrap();
    let (code, report) = verify(&image, &manifest, &["--ca-file", ca]);
    assert_eq!(
        (code, result_of(&report).0),
        (0, "authenticated"),
        "{report}"
    );

    let (code, report) = verify(&image, &manifest, &["--insecure-skip-tls-verify"]);
    assert_eq!(
        (code, result_of(&report).0),
        (0, "authenticated"),
        "{report}"
    );

    // Plain HTTP against a TLS port.
    let (code, report) = verify(&image, &manifest, &["--plain-http"]);
    assert_eq!(code, 1, "{report}");
    assert_ne!(result_of(&report).0, "authenticated");
}

#[test]
fn closed_port_is_connection_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let manifest = create_secret(&host, "u", "p");
    assert_one_line_failure(
        verify_with_stderr(&format!("{host}/a/b:1"), &manifest, &["--plain-http"]),
        "connection-refused",
        "connection refused",
    );
}

#[test]
fn bearer_tokens_per_repository_access() {
    let tokens = TokenServer::start(&[
        ("admin", "adminpw", Grant::Everything),
        (
            "alice",
            "alicepw",
            Grant::Repos(vec![("team/app".into(), vec!["pull".into()])]),
        ),
        ("bob", "bobpw", Grant::Repos(Vec::new())),
        ("carol", "carolpw", Grant::Forbidden),
    ]);
    let reg = Registry::start(Auth::Token(&tokens), None);
    let host = reg.host();
    push_image(&format!("{host}/team/app:v1"), ("admin", "adminpw"));
    push_image(&format!("{host}/team/private:v1"), ("admin", "adminpw"));
    let app = format!("{host}/team/app:v1");
    let private = format!("{host}/team/private:v1");

    let alice = create_secret(&host, "alice", "alicepw");
    let (code, report) = verify(&app, &alice, &["--plain-http"]);
    let (result, message) = result_of(&report);
    assert_eq!(
        (code, result),
        (0, "authenticated"),
        "{report}\n{}",
        reg.log()
    );
    assert!(message.contains("Bearer"), "{message}");
    let auth = authfile(&alice);
    assert!(
        skopeo_inspect(auth.path(), &app).status.success(),
        "skopeo pulls what alice may pull"
    );

    // Valid credentials, no pull right on this repository. distribution answers the
    // manifest request with 401 and `error="insufficient_scope"` (never 403 itself).
    let (code, report) = verify(&private, &alice, &["--plain-http"]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (1, "no-access"), "{report}");
    assert!(message.contains("insufficient_scope"), "{message}");
    assert!(
        !skopeo_inspect(auth.path(), &private).status.success(),
        "skopeo is refused too"
    );

    // What the registry itself answers, without our client in between.
    let (status, challenge) =
        raw_manifest_head(&tokens.realm(), &host, "team/private", ("alice", "alicepw"));
    eprintln!("registry answered {status} with WWW-Authenticate: {challenge}");
    assert_eq!(status, 401);
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains("repository:team/private:pull"),
        "{challenge}"
    );

    let bob = create_secret(&host, "bob", "bobpw");
    let (code, report) = verify(&app, &bob, &["--plain-http"]);
    assert_eq!((code, result_of(&report).0), (1, "no-access"), "{report}");

    // The token server refuses outright (403).
    let carol = create_secret(&host, "carol", "carolpw");
    let (code, report) = verify(&app, &carol, &["--plain-http"]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (1, "no-access"), "{report}");
    assert!(message.contains("403"), "{message}");

    // A wrong password: the token server answers 401.
    let wrong = create_secret(&host, "alice", "wrong");
    let (code, report) = verify(&app, &wrong, &["--plain-http"]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (1, "bad-credentials"), "{report}");
    assert!(message.contains("401"), "{message}");
}

/// Gets a token for `repo` from the realm and HEADs the manifest with it; returns the
/// registry's status and `WWW-Authenticate` header.
fn raw_manifest_head(
    realm: &str,
    host: &str,
    repo: &str,
    (user, pass): (&str, &str),
) -> (u16, String) {
    pullsecret_injector::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let token: Value = http
            .get(format!(
                "{realm}?service=test-registry&scope=repository:{repo}:pull"
            ))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let resp = http
            .head(format!("http://{host}/v2/{repo}/manifests/v1"))
            .bearer_auth(token["token"].as_str().unwrap())
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (resp.status().as_u16(), challenge)
    })
}

#[test]
fn config_written_by_skopeo_login_becomes_a_working_secret() {
    let reg = Registry::start(Auth::Htpasswd(&[("ci", "t0ken")]), None);
    let host = reg.host();
    push_image(&format!("{host}/team/app:v1"), ("ci", "t0ken"));
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    let out = cli::run_command(
        Command::new(require_tool("skopeo"))
            .args([
                "login",
                "--tls-verify=false",
                "--username",
                "ci",
                "--password-stdin",
                "--authfile",
            ])
            .arg(&authfile)
            .arg(&host),
        b"t0ken\n",
    );
    assert!(
        out.status.success(),
        "skopeo login: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cli::run(
        &[
            "secret",
            "create",
            "ci-pull",
            "--from-docker-config",
            authfile.to_str().unwrap(),
            "--server",
            &host,
        ],
        b"",
    );
    cli::assert_exit(&out, 0);
    let (code, report) = verify(
        &format!("{host}/team/app:v1"),
        &out.stdout,
        &["--plain-http"],
    );
    assert_eq!(
        (code, result_of(&report).0),
        (0, "authenticated"),
        "{report}"
    );
}

/// The common private-registry setup: `openssl req -x509` (CA:TRUE) served by the registry
/// and given with `--ca-file`, as containerd and Docker take it from `certs.d`.
#[test]
fn self_signed_ca_certificate_given_with_ca_file_is_trusted() {
    let tls = self_signed_ca_tls(&["127.0.0.1", "localhost"], false);
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), Some(&tls));
    let host = reg.host();
    let digest = push_image(&format!("{host}/team/app:v1"), ("alice", "pw"));
    let manifest = create_secret(&host, "alice", "pw");
    let image = format!("{host}/team/app:v1");
    let ca = tls.ca.to_str().unwrap();

    let (code, report, stderr) = verify_with_stderr(&image, &manifest, &["--ca-file", ca]);
    let (result, message) = result_of(&report);
    assert_eq!((code, result), (0, "authenticated"), "{report}");
    assert!(message.contains(&digest), "{message}");
    assert_eq!(stderr, "");

    // Without the file nothing vouches for it; the reason names the fix.
    let message = assert_one_line_failure(
        verify_with_stderr(&image, &manifest, &[]),
        "tls-error",
        "--ca-file",
    );
    assert!(message.contains("self-signed"), "{message}");

    // Another self-signed certificate in the file is no pin for this one.
    let other = self_signed_ca_tls(&["127.0.0.1"], false);
    assert_one_line_failure(
        verify_with_stderr(
            &image,
            &manifest,
            &["--ca-file", other.ca.to_str().unwrap()],
        ),
        "tls-error",
        "--ca-file",
    );
}

#[test]
fn unknown_ca_is_one_line_reason() {
    let tls = tls_files();
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), Some(&tls));
    let host = reg.host();
    let manifest = create_secret(&host, "alice", "pw");
    assert_one_line_failure(
        verify_with_stderr(&format!("{host}/team/app:v1"), &manifest, &[]),
        "tls-error",
        "signed by an unknown CA; pass that CA with --ca-file",
    );
}

#[test]
fn name_mismatch_is_one_line_reason() {
    // Pinned with --ca-file, but issued for another host: trust does not waive the name.
    let tls = self_signed_ca_tls(&["registry.example.com"], false);
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), Some(&tls));
    let host = reg.host();
    let manifest = create_secret(&host, "alice", "pw");
    let message = assert_one_line_failure(
        verify_with_stderr(
            &format!("{host}/team/app:v1"),
            &manifest,
            &["--ca-file", tls.ca.to_str().unwrap()],
        ),
        "tls-error",
        "not valid for 127.0.0.1",
    );
    assert!(message.contains("registry.example.com"), "{message}");
}

#[test]
fn expired_certificate_is_one_line_reason() {
    let tls = self_signed_ca_tls(&["127.0.0.1"], true);
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), Some(&tls));
    let host = reg.host();
    let manifest = create_secret(&host, "alice", "pw");
    assert_one_line_failure(
        verify_with_stderr(
            &format!("{host}/team/app:v1"),
            &manifest,
            &["--ca-file", tls.ca.to_str().unwrap()],
        ),
        "tls-error",
        "expired at 2021-01-01T00:00:00Z",
    );
}

#[test]
fn plain_http_against_https_port_is_one_line_reason() {
    let tls = tls_files();
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), Some(&tls));
    let host = reg.host();
    let manifest = create_secret(&host, "alice", "pw");
    assert_one_line_failure(
        verify_with_stderr(&format!("{host}/team/app:v1"), &manifest, &["--plain-http"]),
        "error",
        "speaks HTTPS on this port",
    );
}

#[test]
fn https_against_plain_http_port_is_one_line_reason() {
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), None);
    let host = reg.host();
    let manifest = create_secret(&host, "alice", "pw");
    assert_one_line_failure(
        verify_with_stderr(&format!("{host}/team/app:v1"), &manifest, &[]),
        "tls-error",
        "use --plain-http",
    );
}

#[test]
fn wrong_password_names_the_realm() {
    let reg = Registry::start(Auth::Htpasswd(&[("alice", "pw")]), None);
    let host = reg.host();
    let manifest = create_secret(&host, "alice", "wrong");
    let message = assert_one_line_failure(
        verify_with_stderr(&format!("{host}/team/app:v1"), &manifest, &["--plain-http"]),
        "bad-credentials",
        "401 Unauthorized",
    );
    assert!(message.contains(r#"realm "test-registry""#), "{message}");
}
