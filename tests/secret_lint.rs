//! `secret lint` finds each pitfall the kubelet would trip over, names it, and never prints
//! the credentials it read.

mod support {
    pub mod cli;
}

use std::path::PathBuf;
use std::process::Output;

use support::cli;

const PASSWORD: &str = "s3cr3t-PASSWORD";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/secrets")
        .join(name)
}

fn lint(args: &[&str]) -> Output {
    lint_stdin(args, b"")
}

fn lint_stdin(args: &[&str], stdin: &[u8]) -> Output {
    cli::run_command(cli::command().args(["secret", "lint"]).args(args), stdin)
}

/// Lints a fixture with `-o json`; returns exit code and the finding codes in order.
fn codes(name: &str) -> (i32, Vec<String>, serde_json::Value) {
    let path = fixture(name);
    let out = lint(&["-o", "json", path.to_str().unwrap()]);
    assert_no_secret_in(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let codes = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect();
    (out.status.code().unwrap(), codes, report)
}

fn assert_no_secret_in(out: &Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(PASSWORD),
        "a password leaked into the output:\n{all}"
    );
    assert!(
        !all.contains("czNjcjN0"),
        "base64 of a password leaked into the output:\n{all}"
    );
}

#[test]
fn each_pitfall_fixture_reports_its_code_and_exits_1() {
    let cases: &[(&str, &[&str])] = &[
        ("opaque-type.yaml", &["type-key-mismatch"]),
        (
            "config-json-as-dockercfg.yaml",
            &["dockerconfigjson-as-dockercfg"],
        ),
        (
            "dockercfg-as-dockerconfigjson.yaml",
            &["dockercfg-as-dockerconfigjson"],
        ),
        ("invalid-json.yaml", &["invalid-json"]),
        ("bad-auth-not-base64.yaml", &["bad-auth"]),
        ("bad-auth-no-colon.yaml", &["bad-auth"]),
        ("wrong-type.yaml", &["wrong-json-type"]),
        ("skipped-key.yaml", &["skipped-key"]),
        (
            "docker-hub-aliases.yaml",
            &["docker-hub-key", "docker-hub-key", "docker-hub-key"],
        ),
        ("docker-hub-shadowed.yaml", &["docker-hub-shadowed"]),
        ("auth-mismatch.yaml", &["auth-mismatch"]),
        ("identitytoken-only.json", &["identitytoken-only"]),
        (
            "creds-store.json",
            &[
                "creds-store",
                "cred-helpers",
                "empty-credential",
                "empty-credential",
            ],
        ),
        (
            "case-insensitive.yaml",
            &["case-insensitive-field", "case-insensitive-field"],
        ),
        ("data-not-base64.yaml", &["data-not-base64"]),
        ("list.yaml", &["type-key-mismatch"]),
        ("data-key-invalid.yaml", &["data-key-invalid"]),
    ];
    for (name, expected) in cases {
        let (code, found, _) = codes(name);
        assert_eq!(&found, expected, "{name}");
        assert_eq!(code, 1, "{name}: findings must exit 1");
    }
}

#[test]
fn decode_failures_say_every_pull_of_the_pod_fails() {
    for name in [
        "invalid-json.yaml",
        "bad-auth-not-base64.yaml",
        "bad-auth-no-colon.yaml",
        "wrong-type.yaml",
    ] {
        let (_, _, report) = codes(name);
        let f = &report["findings"][0];
        assert_eq!(f["severity"], "error", "{name}");
        assert!(
            f["message"]
                .as_str()
                .unwrap()
                .contains("fails every image pull"),
            "{name}: {f}"
        );
    }
}

#[test]
fn hub_aliases_name_each_key_and_the_fix() {
    let (_, _, report) = codes("docker-hub-aliases.yaml");
    let regs: Vec<&str> = cli::strings_in(&report, "findings", "registry");
    assert_eq!(
        regs,
        [
            "registry-1.docker.io",
            "https://registry.hub.docker.com",
            "*.docker.io"
        ]
    );
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("https://index.docker.io/v1/")
    );
}

#[test]
fn shadowing_names_the_fallback_secret() {
    let (_, _, report) = codes("docker-hub-shadowed.yaml");
    let f = &report["findings"][0];
    assert_eq!(f["source"], "Secret apps/hub-short");
    assert_eq!(f["registry"], "docker.io");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("Secret apps/hub-default"),
        "{f}"
    );
}

#[test]
fn list_items_are_checked_one_by_one() {
    let (_, _, report) = codes("list.yaml");
    assert_eq!(report["checked"].as_array().unwrap().len(), 2);
    assert_eq!(report["findings"][0]["source"], "Secret apps/opaque");
}

#[test]
fn clean_secrets_exit_0_in_json_yaml_and_string_data() {
    for name in ["clean.json", "string-data.yaml"] {
        let (code, found, _) = codes(name);
        assert!(found.is_empty(), "{name}: {found:?}");
        assert_eq!(code, 0, "{name}");
    }
    let out = lint(&[fixture("clean.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems"));
}

#[test]
fn unusable_input_exits_2() {
    for name in ["pod.yaml", "not-yaml.txt"] {
        let out = lint(&[fixture(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(!out.stderr.is_empty(), "{name}: says why");
    }
    let out = lint(&["/nonexistent/secret.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn text_output_never_shows_credentials() {
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let path = entry.unwrap().path();
        let out = lint(&[path.to_str().unwrap()]);
        assert_no_secret_in(&out);
    }
}

#[test]
fn reads_stdin() {
    let text = std::fs::read(fixture("opaque-type.yaml")).unwrap();
    let out = lint_stdin(&["-"], &text);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[type-key-mismatch]"));
}

#[test]
fn syntax_errors_are_caught_by_the_api_server_first() {
    let (_, _, report) = codes("invalid-json.yaml");
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(message.contains("API server rejects"), "{message}");
}

#[test]
fn secrets_over_one_mib_are_rejected_by_the_api_server() {
    use base64::Engine;
    let config = format!(
        r#"{{"auths":{{"r.example.com":{{"username":"u","password":"p","email":"{}"}}}}}}"#,
        "x".repeat(1024 * 1024)
    );
    let manifest = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}});
    let out = lint_stdin(&["-o", "json", "-"], manifest.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["findings"][0]["code"], "secret-too-large",
        "{report}"
    );
}
