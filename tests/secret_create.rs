//! `secret create` prints a Secret the kubelet uses as intended: kubectl's shape, the
//! password from stdin without its trailing newline, and a round trip through `secret lint`
//! and `secret match`. `--from-docker-config` keeps only `auths` and names credential
//! helpers it cannot read.

mod support {
    pub mod cli;
}

use std::io::Write;
use std::process::Output;

use base64::Engine;
use serde_json::{Value, json};
use support::cli;

fn b64d(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Runs `secret create -o json` and returns (manifest, decoded config).
fn create_json(args: &[&str], stdin: &[u8]) -> (Value, Value) {
    let mut all = vec!["secret", "create"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = cli::run(&all, stdin);
    cli::assert_exit(&out, 0);
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = manifest["data"].as_object().unwrap();
    assert_eq!(data.len(), 1, "one data key");
    let (_, value) = data.iter().next().unwrap();
    let config: Value = serde_json::from_slice(&b64d(value.as_str().unwrap())).unwrap();
    (manifest, config)
}

#[test]
fn kubectl_shape_with_password_from_stdin_newline_stripped() {
    let (manifest, config) = create_json(
        &[
            "regcred",
            "--server",
            "registry.example.com:5000",
            "--username",
            "alice",
            "--password-stdin",
            "--email",
            "alice@example.com",
            "--namespace",
            "team-a",
        ],
        b"hunter2\n",
    );
    assert_eq!(manifest["apiVersion"], "v1");
    assert_eq!(manifest["kind"], "Secret");
    assert_eq!(manifest["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        manifest["metadata"],
        json!({"name": "regcred", "namespace": "team-a"})
    );
    assert_eq!(
        config,
        json!({"auths": {"registry.example.com:5000": {
            "username": "alice", "password": "hunter2", "email": "alice@example.com",
            "auth": "YWxpY2U6aHVudGVyMg=="}}})
    );
    // Byte-exact kubectl field order.
    let raw = String::from_utf8(b64d(
        manifest["data"][".dockerconfigjson"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        raw,
        r#"{"auths":{"registry.example.com:5000":{"username":"alice","password":"hunter2","email":"alice@example.com","auth":"YWxpY2U6aHVudGVyMg=="}}}"#
    );
}

#[test]
fn crlf_is_stripped_and_colons_in_passwords_survive() {
    let (_, config) = create_json(
        &[
            "c",
            "--server",
            "ghcr.io",
            "--username",
            "bot",
            "--password-stdin",
        ],
        b"to:ken\r\n",
    );
    let entry = &config["auths"]["ghcr.io"];
    assert_eq!(entry["password"], "to:ken");
    assert_eq!(b64d(entry["auth"].as_str().unwrap()), b"bot:to:ken");
    assert!(entry.get("email").is_none(), "email only when given");
}

#[test]
fn default_server_is_docker_hub_and_match_finds_it_via_fallback() {
    let (manifest, config) = create_json(&["hub", "--username", "me", "--password-stdin"], b"pw\n");
    assert!(
        config["auths"].get("https://index.docker.io/v1/").is_some(),
        "{config}"
    );
    let out = cli::run(
        &[
            "secret",
            "match",
            "--image",
            "nginx:1.27",
            "-o",
            "json",
            "-",
        ],
        manifest.to_string().as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["viaDockerHubFallback"], true);
    assert_eq!(m["matches"][0]["username"], "me");
}

#[test]
fn yaml_output_passes_lint_and_match_finds_the_registry_images() {
    let out = cli::run(
        &[
            "secret",
            "create",
            "regcred",
            "--server",
            "registry.example.com",
            "--username",
            "robot$ci",
            "--password-stdin",
        ],
        b"p@ss word\n",
    );
    assert_eq!(out.status.code(), Some(0));
    let yaml = out.stdout;
    let text = String::from_utf8_lossy(&yaml);
    assert!(
        text.contains("type: kubernetes.io/dockerconfigjson"),
        "{text}"
    );
    assert!(
        !text.contains(">-") && !text.contains("|"),
        "values on one line:\n{text}"
    );

    let lint = cli::run(&["secret", "lint", "-"], &yaml);
    assert_eq!(
        lint.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    for image in [
        "registry.example.com/team/app:v1",
        "registry.example.com/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ] {
        let m = cli::run(
            &["secret", "match", "--image", image, "-o", "json", "-"],
            &yaml,
        );
        assert_eq!(m.status.code(), Some(0), "{image}");
        let m: Value = serde_json::from_slice(&m.stdout).unwrap();
        assert_eq!(m["matches"][0]["username"], "robot$ci");
    }
    let other = cli::run(
        &["secret", "match", "--image", "ghcr.io/team/app", "-"],
        &yaml,
    );
    assert_eq!(
        other.status.code(),
        Some(1),
        "other registries are not covered"
    );
}

#[test]
fn dockercfg_type_writes_the_bare_map() {
    let (manifest, config) = create_json(
        &[
            "legacy",
            "--server",
            "quay.io",
            "--username",
            "u",
            "--password-stdin",
            "--type",
            "dockercfg",
        ],
        b"p",
    );
    assert_eq!(manifest["type"], "kubernetes.io/dockercfg");
    assert!(manifest["data"].get(".dockercfg").is_some());
    assert_eq!(config["quay.io"]["username"], "u");
    let lint = cli::run(&["secret", "lint", "-"], manifest.to_string().as_bytes());
    assert_eq!(
        lint.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let m = cli::run(
        &["secret", "match", "--image", "quay.io/org/app", "-"],
        manifest.to_string().as_bytes(),
    );
    assert_eq!(m.status.code(), Some(0));
}

#[test]
fn refuses_what_the_kubelet_would_misread() {
    // (secret name, --server, --username, stdin, what the error names)
    let with_password: &[(&str, &str, &str, &[u8], &str)] = &[
        ("x", "r.io", "a:b", b"pw", "`:`"),
        ("x", "registry-1.docker.io", "a", b"pw", "Docker Hub"),
        ("x", "registry.hub.docker.com", "a", b"pw", "Docker Hub"),
        ("x", "r.io:http", "a", b"pw", "cannot parse"),
        ("x", "r.io", "a", b"\n", "empty"),
        ("Bad_Name", "r.io", "a", b"pw", "DNS"),
    ];
    let mut cases: Vec<(Vec<&str>, &[u8], &str)> = with_password
        .iter()
        .map(|&(name, server, user, stdin, says)| {
            let args = vec![
                "secret",
                "create",
                name,
                "--server",
                server,
                "--username",
                user,
                "--password-stdin",
            ];
            (args, stdin, says)
        })
        .collect();
    cases.push((
        vec!["secret", "create", "x", "--server", "r.io"],
        b"",
        "--username",
    ));
    for (args, stdin, says) in &cases {
        let out = cli::run(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

fn docker_config() -> tempfile::NamedTempFile {
    let config = json!({
        "auths": {
            "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
            "ghcr.io": {"auth": b64("ghuser:ghtoken"), "email": "g@example.com"},
            "quay.io": {},
            "myregistry.azurecr.io": {"identitytoken": "tok"}
        },
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
        "HttpHeaders": {"User-Agent": "Docker-Client"}
    });
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(config.to_string().as_bytes()).unwrap();
    f
}

fn from_config(server: Option<&str>) -> Output {
    let f = docker_config();
    let path = f.path().to_str().unwrap().to_string();
    let mut args = vec![
        "secret",
        "create",
        "imported",
        "--from-docker-config",
        &path,
        "-o",
        "json",
    ];
    if let Some(s) = server {
        args.extend_from_slice(&["--server", s]);
    }
    cli::run(&args, b"")
}

#[test]
fn from_docker_config_keeps_only_the_matching_auths_entry() {
    // `docker.io` finds `https://index.docker.io/v1/`, the way the kubelet would match it.
    for server in [
        "docker.io",
        "https://index.docker.io/v1/",
        "index.docker.io",
    ] {
        let out = from_config(Some(server));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{server}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
        let config: Value = serde_json::from_slice(&b64d(
            manifest["data"][".dockerconfigjson"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(
            config,
            json!({"auths": {"https://index.docker.io/v1/": {
                "username": "hubuser", "password": "hubpass", "auth": b64("hubuser:hubpass")}}}),
            "{server}: only auths, only the Hub entry, no credsStore/credHelpers/HttpHeaders"
        );
    }
    let out = from_config(Some("ghcr.io"));
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let config: Value = serde_json::from_slice(&b64d(
        manifest["data"][".dockerconfigjson"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["auths"]["ghcr.io"]["email"], "g@example.com");
    assert_eq!(config["auths"].as_object().unwrap().len(), 1);
}

#[test]
fn from_docker_config_names_the_credential_helper() {
    let cases = [
        (Some("quay.io"), "docker-credential-desktop"),
        (Some("gcr.io"), "docker-credential-gcloud"),
        (None, "docker-credential-desktop"),
        (Some("myregistry.azurecr.io"), "identity token"),
        (Some("nowhere.example.com"), "docker-credential-desktop"),
    ];
    for (server, says) in cases {
        let out = from_config(server);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{server:?}");
        assert!(err.contains(says), "{server:?}: {err}");
        assert!(
            !err.contains("hubpass") && !err.contains("ghtoken"),
            "{err}"
        );
    }
}

#[test]
fn from_docker_config_without_helpers_keeps_every_entry() {
    let config = json!({"auths": {
        "a.example.com": {"username": "ua", "password": "pa"},
        "b.example.com": {"auth": b64("ub:pb")}}});
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(config.to_string().as_bytes()).unwrap();
    let (_, out) = create_json(
        &["both", "--from-docker-config", f.path().to_str().unwrap()],
        b"",
    );
    assert_eq!(out["auths"]["a.example.com"]["auth"], b64("ua:pa"));
    assert_eq!(out["auths"]["b.example.com"]["username"], "ub");
}
