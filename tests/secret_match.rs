//! `secret match` offers exactly the credentials the kubelet would, in its order: every
//! lookup case of the shared `kubelet_keyring.json`, run through the binary.

mod support {
    pub mod cli;
    pub mod shared;
}

use std::process::Output;

use pullsecret_injector::reference::ImageRef;
use serde_json::{Value, json};
use support::{cli, shared};

fn run_match(args: &[&str], stdin: &[u8]) -> Output {
    cli::run_command(cli::command().args(["secret", "match"]).args(args), stdin)
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One Secret per `auths` entry, in order: like a Pod listing them as imagePullSecrets.
/// (Inside one JSON object Go's map order is random; across Secrets it is the Pod's order.)
fn secrets_list(auths: &[Value]) -> String {
    let items: Vec<Value> = auths
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let config = json!({"auths": {a["key"].as_str().unwrap(): {
                "username": a["cred"], "password": "pw-s3cr3t", "email": "e@example.com"}}});
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("s{i}"), "namespace": "default"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64(&config.to_string())}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn check(case: &Value, image: &str, raw: bool) {
    let input = secrets_list(case["auths"].as_array().unwrap());
    let mut args = vec!["--image", image, "-o", "json", "-"];
    if raw {
        args.push("--raw-target");
    }
    let out = run_match(&args, input.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{case}: not JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let found = case["found"].as_bool().unwrap();
    assert_eq!(got["found"], found, "{case}\n{got}");
    assert_eq!(got["lookupTarget"], case["lookup_target"], "{case}");
    let users: Vec<&str> = cli::strings_in(&got, "matches", "username");
    let want: Vec<&str> = case["creds_in_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(users, want, "{case}\n{got}");
    assert_eq!(out.status.code(), Some(if found { 0 } else { 1 }), "{case}");
}

#[test]
fn every_lookup_case_of_the_kubelet_table() {
    let table = shared::reference_json("kubelet_keyring.json");
    let cases = table["lookup_cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "the table has its cases");
    let mut as_images = 0;
    for case in cases {
        let target = case["lookup_target"].as_str().unwrap();
        check(case, target, true);
        // Where the target is also an image that normalizes to itself, the plain --image
        // path (parse + normalize) must agree too.
        if ImageRef::parse(target)
            .map(|r| r.lookup_target())
            .as_deref()
            == Ok(target)
        {
            check(case, target, false);
            as_images += 1;
        }
    }
    assert!(
        as_images >= 10,
        "most cases also run as images ({as_images})"
    );
}

#[test]
fn json_output_has_exactly_the_documented_fields() {
    let input = secrets_list(&[json!({"key": "https://index.docker.io/v1/", "cred": "hub"})]);
    let out = run_match(
        &["--image", "nginx:1.27", "-o", "json", "-"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        json!({"image": "nginx:1.27", "lookupTarget": "docker.io/library/nginx", "found": true,
            "viaDockerHubFallback": true,
            "matches": [{"key": "https://index.docker.io/v1/", "indexKey": "index.docker.io", "username": "hub",
                "source": "Secret default/s0"}]})
    );
}

#[test]
fn direct_docker_io_key_suppresses_the_fallback() {
    let input = secrets_list(&[
        json!({"key": "https://index.docker.io/v1/", "cred": "fallback"}),
        json!({"key": "docker.io", "cred": "direct"}),
    ]);
    let out = run_match(
        &["--image", "library/redis", "-o", "json", "-"],
        input.as_bytes(),
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["viaDockerHubFallback"], false);
    assert_eq!(got["matches"][0]["username"], "direct");
    assert_eq!(got["matches"].as_array().unwrap().len(), 1);
}

#[test]
fn invalid_image_or_broken_secret_exits_2() {
    let input = secrets_list(&[json!({"key": "reg.example.com", "cred": "u"})]);
    let out = run_match(&["--image", "Not A/Valid:image", "-"], input.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    let broken = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(r#"{"auths":{"other.example.com":{"auth":"nope!"}}}"#)}});
    let out = run_match(
        &["--image", "reg.example.com/a/b", "-"],
        broken.to_string().as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fail every image pull"), "{err}");
    assert!(
        !err.contains("nope!"),
        "the auth value is not echoed: {err}"
    );
}

#[test]
fn text_output_lists_credentials_in_order() {
    let input = secrets_list(&[
        json!({"key": "bar.example.com", "cred": "ada"}),
        json!({"key": "bar.example.com/pong", "cred": "grace"}),
    ]);
    let out = run_match(
        &["--image", "bar.example.com/pong/pang", "-"],
        input.as_bytes(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let grace = text.find("user grace").expect("grace listed");
    let ada = text.find("user ada").expect("ada listed");
    assert!(grace < ada, "longer key first:\n{text}");
    assert!(!text.contains("s3cr3t"), "no password:\n{text}");
}

fn secret_with_config(config: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(config)}})
    .to_string()
}

#[test]
fn go_json_rules_case_insensitive_fields_last_duplicate_wins() {
    let input = secret_with_config(
        r#"{"Auths":{"r.example.com":{"username":"first","USERNAME":"second","password":"p"}}}"#,
    );
    let out = run_match(
        &["--image", "r.example.com/a/b", "-o", "json", "-"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["matches"][0]["username"], "second");
}

#[test]
fn identitytoken_only_entry_is_found_with_an_empty_username() {
    let input = secret_with_config(r#"{"auths":{"r.example.com":{"identitytoken":"tok"}}}"#);
    let out = run_match(
        &["--image", "r.example.com/a/b", "-o", "json", "-"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "the kubelet counts it as found");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["matches"][0]["username"], "");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("tok\""));
}

#[test]
fn config_json_stored_as_dockercfg_matches_nothing() {
    let config = r#"{"auths":{"r.example.com":{"username":"u","password":"p"}}}"#;
    let input = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "type": "kubernetes.io/dockercfg", "data": {".dockercfg": b64(config)}})
    .to_string();
    let out = run_match(&["--image", "r.example.com/a/b", "-"], input.as_bytes());
    assert_eq!(
        out.status.code(),
        Some(1),
        "read as a registry named `auths`"
    );
}
