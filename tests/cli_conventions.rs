//! What a kubectl user expects of the command line, run through the binary: the Pod's own
//! namespace, patterns that can never match, why a rule did not apply, `-` for stdin,
//! `-o json|yaml`, `-n`, help with exit codes, completion, `--version`, errors to act on.

mod support {
    pub mod cli;
}

use std::path::Path;

use serde_json::{Value, json};
use support::cli;

/// The policy of most tests here (tests/support/mod.rs has the same one for the library).
const POLICY: &str = "\
sourceNamespace: registry-credentials
excludeNamespaces: [kube-system]
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-deploy-token
  - name: ghcr
    registries: [\"ghcr.io/acme\"]
    secret: ghcr-pull
    namespaces:
      include: [\"team-*\"]
      exclude: [team-sandbox]
  - name: quay
    registries: [quay.io]
    secret: quay-pull
    namespaces:
      selector:
        matchLabels: {registry-access: quay}
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pod_in(namespace: Option<&str>) -> String {
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: api\n{ns}spec:\n  containers:\n    - name: api\n      image: registry.gitlab.com/acme/api:1\n"
    )
}

fn patched(out: &std::process::Output) -> Value {
    cli::assert_exit(out, 0);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

// ---------------------------------------------------------------------------------------
// 1. review of a bare Pod

#[test]
fn review_of_a_bare_pod_uses_the_pods_own_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    let review = |extra: &[&str], pod: &str| {
        cli::run_command(
            cli::command()
                .args(["review", "--policy", &policy, "--patched"])
                .args(extra)
                .arg("-"),
            pod.as_bytes(),
        )
    };

    // kube-system is excluded: a Pod that says it lives there gets nothing.
    let v = patched(&review(&[], &pod_in(Some("kube-system"))));
    assert_eq!(v["spec"].get("imagePullSecrets"), None, "{v}");
    // The same Pod without a namespace lands in `default`, as with kubectl, and is injected.
    let v = patched(&review(&[], &pod_in(None)));
    assert_eq!(
        v["spec"]["imagePullSecrets"],
        json!([{"name": "gitlab-deploy-token"}])
    );
    // --namespace names the namespace of a Pod that has none, and may repeat the Pod's own.
    let v = patched(&review(&["-n", "kube-system"], &pod_in(None)));
    assert_eq!(v["spec"].get("imagePullSecrets"), None, "{v}");
    let v = patched(&review(
        &["--namespace", "kube-system"],
        &pod_in(Some("kube-system")),
    ));
    assert_eq!(v["spec"].get("imagePullSecrets"), None, "{v}");

    // A contradiction is refused, naming both, and nothing is printed on stdout.
    let out = review(&["--namespace", "default"], &pod_in(Some("kube-system")));
    cli::assert_exit(&out, 2);
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("\"kube-system\"") && err.contains("\"default\""),
        "{err}"
    );
}

#[test]
fn review_refuses_a_namespace_that_contradicts_the_admission_review() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "namespace": "team-a", "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": serde_json::from_str::<Value>(&serde_json::to_string(
                &serde_saphyr::from_str::<Value>(&pod_in(None)).unwrap()).unwrap()).unwrap()}
    })
    .to_string();
    let out = cli::run(
        &["review", "--policy", &policy, "-n", "team-b", "-"],
        review.as_bytes(),
    );
    cli::assert_exit(&out, 2);
    assert!(stderr(&out).contains("\"team-a\""), "{}", stderr(&out));
    let out = cli::run(
        &["review", "--policy", &policy, "-n", "team-a", "-"],
        review.as_bytes(),
    );
    cli::assert_exit(&out, 0);
}

// ---------------------------------------------------------------------------------------
// 2. patterns that never match

#[test]
fn check_rejects_docker_hub_spellings_that_never_match_and_names_the_pattern_that_would() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("index.docker.io", "\"docker.io\""),
        ("index.docker.io/library/", "\"docker.io/library/\""),
        ("nginx", "\"docker.io/library/nginx\""),
        ("library/nginx", "\"docker.io/library/nginx\""),
        ("acme/", "\"docker.io/acme/\""),
    ];
    for (pattern, suggestion) in cases {
        let text = format!(
            "sourceNamespace: creds\nrules:\n  - name: hub\n    registries: [\"{pattern}\"]\n    secret: hub-pull\n"
        );
        let policy = write(dir.path(), "hub.yaml", &text);
        let out = cli::run(&["check", "--policy", &policy], b"");
        cli::assert_exit(&out, 1);
        let report = stdout(&out);
        assert!(
            report.starts_with(&format!("{policy}:4:18: ")) && report.contains("never matches"),
            "{pattern}: {report}"
        );
        assert!(report.contains(suggestion), "{pattern}: {report}");

        // The suggested pattern is valid, and it is the one that matches the image.
        let fixed = text.replace(pattern, suggestion.trim_matches('"'));
        let fixed_policy = write(dir.path(), "fixed.yaml", &fixed);
        cli::assert_exit(&cli::run(&["check", "--policy", &fixed_policy], b""), 0);
        let image = match pattern {
            "acme/" => "acme/tool:1",
            _ => "nginx:1.27",
        };
        let out = cli::run(
            &[
                "explain",
                "--policy",
                &fixed_policy,
                "--image",
                image,
                "-o",
                "json",
            ],
            b"",
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["rules"], json!(["hub"]), "{pattern} fixed: {v}");
    }
}

#[test]
fn check_warns_about_a_pattern_on_a_docker_hub_api_host_but_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "policy.yaml",
        "sourceNamespace: creds\nrules:\n  - name: hub\n    registries: [registry-1.docker.io]\n    secret: hub-pull\n",
    );
    let out = cli::run(&["check", "--policy", &policy], b"");
    cli::assert_exit(&out, 0);
    let report = stdout(&out);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 2, "{report}");
    assert!(
        lines[0].starts_with(&format!("{policy}:4:18: warning: "))
            && lines[0].contains("docker.io"),
        "{report}"
    );
    assert!(lines[1].contains(": ok: 1 rule"), "{report}");

    let out = cli::run(&["check", "--policy", &policy, "-o", "json"], b"");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["warnings"][0]["line"], 4);
}

// ---------------------------------------------------------------------------------------
// 3. explain: why not

#[test]
fn explain_says_for_every_rule_why_it_did_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    let why_not = |image: &str, extra: &[&str]| -> Value {
        let out = cli::run_command(
            cli::command()
                .args([
                    "explain", "--policy", &policy, "--image", image, "-o", "json",
                ])
                .args(extra),
            b"",
        );
        cli::assert_exit(&out, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["notApplied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["rule"].as_str().unwrap().to_string(), n["reason"].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let reason = |v: &Value, rule: &str| v[rule].as_str().unwrap_or_default().to_string();

    // Only the registries: every other rule, named with what it would have needed.
    let v = why_not("ghcr.io/acme/tool:1", &["-n", "team-a"]);
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["gitlab", "quay"]
    );
    assert!(
        reason(&v, "gitlab").contains("registry.gitlab.com/acme/")
            && reason(&v, "gitlab").contains("ghcr.io/acme/tool"),
        "{v}"
    );
    // An include miss and an exclude hit, naming the pattern.
    let v = why_not("ghcr.io/acme/tool:1", &["-n", "default"]);
    assert!(reason(&v, "ghcr").contains("namespaces.include"), "{v}");
    assert!(reason(&v, "ghcr").contains("\"team-*\""), "{v}");
    let v = why_not("ghcr.io/acme/tool:1", &["-n", "team-sandbox"]);
    assert!(
        reason(&v, "ghcr").contains("namespaces.exclude")
            && reason(&v, "ghcr").contains("\"team-sandbox\""),
        "{v}"
    );
    // A selector that needs labels which were not given, and then the labels given.
    let v = why_not("quay.io/acme/x:1", &[]);
    assert!(reason(&v, "quay").contains("registry-access=quay"), "{v}");
    let v = why_not(
        "quay.io/acme/x:1",
        &["--namespace-labels", "registry-access=quay"],
    );
    assert!(v.get("quay").is_none(), "{v}");
    // A namespace excluded for every rule says so for each.
    let v = why_not("quay.io/acme/x:1", &["-n", "kube-system"]);
    assert!(reason(&v, "quay").contains("excludeNamespaces"), "{v}");
    assert!(reason(&v, "gitlab").contains("excludeNamespaces"), "{v}");

    // The text form says it too, one line per rule.
    let out = cli::run(
        &[
            "explain",
            "--policy",
            &policy,
            "--image",
            "quay.io/acme/x:1",
        ],
        b"",
    );
    let text = stdout(&out);
    assert!(text.contains("rules:          (none)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("not applied:    quay: ") && l.contains("registry-access=quay")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. conventions: `-`, -o json|yaml, -n, --type, --kubeconfig/--context

#[test]
fn files_can_come_from_stdin() {
    let out = cli::run(&["check", "--policy", "-"], POLICY.as_bytes());
    cli::assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with("stdin: ok: 3 rules"),
        "{}",
        stdout(&out)
    );
    let out = cli::run(
        &["check", "--policy", "-"],
        b"sourceNamespace: x\nrulez: []\n",
    );
    cli::assert_exit(&out, 1);
    assert!(stdout(&out).starts_with("stdin:2:1: "), "{}", stdout(&out));

    let out = cli::run(
        &[
            "explain",
            "--policy",
            "-",
            "--image",
            "registry.gitlab.com/acme/a",
            "-o",
            "json",
        ],
        POLICY.as_bytes(),
    );
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["secrets"], json!(["gitlab-deploy-token"]));

    let config =
        json!({"auths": {"registry.gitlab.com": {"auth": "dTpwdy1zM2NyM3Q="}}}).to_string();
    let out = cli::run(
        &[
            "secret",
            "create",
            "pull",
            "--from-docker-config",
            "-",
            "-o",
            "json",
        ],
        config.as_bytes(),
    );
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "kubernetes.io/dockerconfigjson");
    assert!(!stdout(&out).contains("pw-s3cr3t"));

    // Policy and Pod cannot both be stdin.
    let out = cli::run(&["review", "--policy", "-", "-"], POLICY.as_bytes());
    cli::assert_exit(&out, 2);
}

#[test]
fn structured_output_is_json_or_yaml_of_the_same_document() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    let pod = write(dir.path(), "pod.yaml", &pod_in(Some("team-a")));
    let both = |args: &[&str]| -> (Value, Value) {
        let run = |format: &str| {
            let out = cli::run_command(cli::command().args(args).args(["-o", format]), b"");
            cli::assert_exit(&out, 0);
            out.stdout
        };
        let json: Value = serde_json::from_slice(&run("json")).unwrap();
        let yaml: Value = serde_saphyr::from_slice(&run("yaml")).unwrap();
        (json, yaml)
    };
    for args in [
        vec!["check", "--policy", policy.as_str()],
        vec![
            "explain",
            "--policy",
            policy.as_str(),
            "--image",
            "quay.io/a/b",
        ],
        vec!["review", "--policy", policy.as_str(), pod.as_str()],
        vec![
            "review",
            "--policy",
            policy.as_str(),
            "--patched",
            pod.as_str(),
        ],
    ] {
        let (json, yaml) = both(&args);
        assert_eq!(json, yaml, "{args:?}");
    }
    let (check, _) = both(&["check", "--policy", &policy]);
    assert_eq!(check["rules"], json!(["gitlab", "ghcr", "quay"]));
    assert_eq!(check["sourceNamespace"], "registry-credentials");

    // `--output patched`, the old spelling, still works.
    let out = cli::run(
        &["review", "--policy", &policy, "--output", "patched", &pod],
        b"",
    );
    assert_eq!(patched(&out)["kind"], "Pod");
}

#[test]
fn short_namespace_flag_and_full_secret_type_names() {
    let out = cli::run(
        &[
            "secret",
            "create",
            "pull",
            "-n",
            "team-a",
            "--type",
            "kubernetes.io/dockercfg",
            "--server",
            "quay.io",
            "--username",
            "u",
            "--password-stdin",
            "-o",
            "json",
        ],
        b"pw-s3cr3t\n",
    );
    cli::assert_exit(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["namespace"], "team-a");
    assert_eq!(v["type"], "kubernetes.io/dockercfg");
    assert!(v["data"][".dockercfg"].is_string());

    for command in [
        &["review"][..],
        &["explain"],
        &["certs"],
        &["secret", "create"],
        &["serve"],
    ] {
        let out = cli::run_command(cli::command().args(command).arg("--help"), b"");
        assert!(
            stdout(&out).contains("-n, --namespace"),
            "{command:?}: {}",
            stdout(&out)
        );
    }
    for command in [&["audit"][..], &["serve"]] {
        let out = cli::run_command(cli::command().args(command).arg("--help"), b"");
        let help = stdout(&out);
        assert!(
            help.contains("--kubeconfig <FILE>") && help.contains("--context <NAME>"),
            "{command:?}: {help}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. help, completion, version

#[test]
fn every_command_states_its_exit_codes() {
    for command in [
        &["serve"][..],
        &["review"],
        &["explain"],
        &["check"],
        &["certs"],
        &["audit"],
        &["completion"],
        &["secret", "create"],
        &["secret", "lint"],
        &["secret", "match"],
        &["secret", "verify"],
    ] {
        let out = cli::run_command(cli::command().args(command).arg("--help"), b"");
        cli::assert_exit(&out, 0);
        assert!(
            stdout(&out).contains("Exit codes: 0"),
            "{command:?}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef pullsecret-injector"),
        ("fish", "complete -c pullsecret-injector"),
    ] {
        let out = cli::run(&["completion", shell], b"");
        cli::assert_exit(&out, 0);
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["review", "explain", "helm-values"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    cli::assert_exit(&cli::run(&["completion", "tcsh"], b""), 2);
}

#[test]
fn version_names_the_commit() {
    let out = cli::run(&["--version"], b"");
    cli::assert_exit(&out, 0);
    let version = stdout(&out);
    assert!(
        version.starts_with(&format!(
            "pullsecret-injector {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    // Built from a git checkout: the commit is the one checked out (build.rs reruns on HEAD).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let head = String::from_utf8(head.stdout).unwrap();
        assert!(
            version.contains(&format!("(commit {})", head.trim())),
            "{version}"
        );
    } else {
        assert!(version.contains("(commit unknown)"), "{version}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. errors a person can act on

#[test]
fn no_cluster_says_where_it_looked_and_what_to_pass() {
    let home = tempfile::tempdir().unwrap();
    let out = cli::run_command(
        cli::command()
            .args(["audit"])
            .env("HOME", home.path())
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST"),
        b"",
    );
    cli::assert_exit(&out, 2);
    let err = stderr(&out);
    let looked = home.path().join(".kube").join("config");
    assert!(
        err.contains(&format!(
            "no kubeconfig found (looked in {})",
            looked.display()
        )),
        "{err}"
    );
    assert!(err.contains("--kubeconfig"), "{err}");
    assert!(!err.contains("in-cluster:"), "raw inference chain: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let missing = home.path().join("nope.yaml");
    let out = cli::run_command(
        cli::command()
            .arg("audit")
            .arg("--kubeconfig")
            .arg(&missing),
        b"",
    );
    cli::assert_exit(&out, 2);
    assert!(
        stderr(&out).contains(missing.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refused_connection_names_the_server_once() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write(
        dir.path(),
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}, {{name: other, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\nusers: [{{name: u, user: {{token: t0ken}}}}]\n"
        ),
    );
    let out = cli::run(
        &["audit", "--kubeconfig", &kubeconfig, "--context", "other"],
        b"",
    );
    cli::assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot reach the API server at https://127.0.0.1:{port} (context other)"
        )),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(!err.contains("ERROR"), "stray log line: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("t0ken"));

    let out = cli::run(
        &["audit", "--kubeconfig", &kubeconfig, "--context", "nope"],
        b"",
    );
    cli::assert_exit(&out, 2);
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

#[test]
fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.yaml", POLICY);
    let certs = dir.path().join("certs");
    let out = cli::run_command(
        cli::command()
            .args([
                "serve",
                "--no-cluster",
                "--self-signed",
                "--policy",
                &policy,
            ])
            .args(["--listen", &addr, "--admin-listen", "127.0.0.1:0"])
            .arg("--self-signed-dir")
            .arg(&certs),
        b"",
    );
    cli::assert_exit(&out, 2);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    assert_eq!(line.matches("os error 98").count(), 1, "{line}");
}

#[test]
fn a_docker_config_with_only_cred_helpers_says_where_the_password_is_and_how_to_get_one() {
    let config =
        json!({"credHelpers": {"123456789012.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"}})
            .to_string();
    let out = cli::run(
        &["secret", "create", "ecr-pull", "--from-docker-config", "-"],
        config.as_bytes(),
    );
    cli::assert_exit(&out, 2);
    assert!(
        out.stdout.is_empty(),
        "no half-made Secret: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("docker-credential-ecr-login"), "{err}");
    assert!(
        err.contains("aws ecr get-login-password | pullsecret-injector secret create NAME --server 123456789012.dkr.ecr.eu-west-1.amazonaws.com --username AWS --password-stdin"),
        "{err}"
    );

    let config = json!({"auths": {}, "credHelpers": {"registry.example.com": "pass"}}).to_string();
    let out = cli::run(
        &["secret", "create", "pull", "--from-docker-config", "-"],
        config.as_bytes(),
    );
    cli::assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("docker-credential-pass get"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn policy_mistakes_are_described_as_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "policy.yaml",
        "sourceNamespace: creds\nrules:\n  - name: a\n    registry: [quay.io]\n    secret: s\n    namespace: {include: [\"team-*\"]}\n  - name: b\n    registries: [\"[team.example.com\", \"[a-c]reg.example.com\", \"[::1]:5000\"]\n    secret: s\n",
    );
    let out = cli::run(&["check", "--policy", &policy], b"");
    cli::assert_exit(&out, 1);
    let report = stdout(&out);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 2, "{report}");
    assert!(
        lines[0].contains("unknown field `registry` (did you mean `registries`?)"),
        "{report}"
    );
    assert!(
        lines[1].contains("unknown field `namespace` (did you mean `namespaces`?)"),
        "{report}"
    );

    let fixed = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("registry:", "registries:")
        .replace("namespace:", "namespaces:");
    std::fs::write(&policy, fixed).unwrap();
    let out = cli::run(&["check", "--policy", &policy], b"");
    cli::assert_exit(&out, 1);
    let report = stdout(&out);
    let lines: Vec<&str> = report.lines().collect();
    // Only `[team.example.com` is wrong: a glob class is a glob, and [::1] is an address.
    assert_eq!(lines.len(), 1, "{report}");
    assert!(
        lines[0].starts_with(&format!("{policy}:8:18: ")) && lines[0].contains("bad glob"),
        "{report}"
    );
    assert!(!lines[0].contains("IPv6"), "{report}");
}

// ---------------------------------------------------------------------------------------
// 9. the policy inside Helm values

#[test]
fn check_reads_the_policy_of_a_helm_values_file_and_locates_problems_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let values = "\
replicas: 3
# our registries
policy:
  create: true
  spec:
    sourceNamespace: registry-credentials
    rules:
      - name: hub
        registries: [index.docker.io]
        secret: hub-pull
webhook:
  timeoutSeconds: 5
";
    let file = write(dir.path(), "values.yaml", values);
    let out = cli::run(&["check", "--helm-values", &file], b"");
    cli::assert_exit(&out, 1);
    let report = stdout(&out);
    assert!(
        report.starts_with(&format!(
            "{file}:9:22: rule \"hub\": registry pattern \"index.docker.io\""
        )),
        "{report}"
    );

    let fixed = write(
        dir.path(),
        "fixed.yaml",
        &values.replace("index.docker.io", "docker.io"),
    );
    let out = cli::run(&["check", "--helm-values", &fixed], b"");
    cli::assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("ok: 1 rule, 1 secret"),
        "{}",
        stdout(&out)
    );
    // stdin works the same.
    let out = cli::run(
        &["check", "--helm-values", "-"],
        values.replace("index.docker.io", "docker.io").as_bytes(),
    );
    cli::assert_exit(&out, 0);

    // An existing ConfigMap: nothing in the values to check, and it says which file to check.
    let existing = write(
        dir.path(),
        "existing.yaml",
        "policy:\n  create: false\n  configMapName: registry-policy\n  secretNames: [a]\n",
    );
    let out = cli::run(&["check", "--helm-values", &existing], b"");
    cli::assert_exit(&out, 2);
    assert!(stderr(&out).contains("registry-policy"), "{}", stderr(&out));

    // The chart's own defaults pass, and say that they inject nothing.
    let chart_values =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/pullsecret-injector/values.yaml");
    let out = cli::run(
        &["check", "--helm-values", chart_values.to_str().unwrap()],
        b"",
    );
    cli::assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("nothing is injected"),
        "{}",
        stdout(&out)
    );
}

// ---------------------------------------------------------------------------------------
// 8. secret lint: keys with a port

#[test]
fn lint_warns_that_a_key_with_a_port_matches_only_images_with_that_port() {
    let config = json!({"auths": {
        "registry.example.com:443": {"username": "u", "password": "pw-s3cr3t"},
        "registry.example.com": {"username": "v", "password": "pw-s3cr3t"},
        // Not a pitfall: a registry on port 5000 is reached only by images that name it.
        "registry.example.com:5000": {"username": "w", "password": "pw-s3cr3t"},
    }})
    .to_string();
    let out = cli::run(&["secret", "lint", "-o", "json", "-"], config.as_bytes());
    cli::assert_exit(&out, 1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(findings[0]["code"], "key-with-port");
    assert_eq!(findings[0]["severity"], "warning");
    let message = findings[0]["message"].as_str().unwrap();
    assert!(
        message.contains("registry.example.com:443/app")
            && message.contains("never for registry.example.com/app"),
        "{message}"
    );
    assert!(!stdout(&out).contains("pw-s3cr3t"));
    // And it says true: the key is not offered for the image without the port.
    let out = cli::run(
        &[
            "secret",
            "match",
            "--image",
            "registry.example.com/app",
            "-o",
            "json",
            "-",
        ],
        json!({"auths": {"registry.example.com:443": {"username": "u", "password": "p"}}})
            .to_string()
            .as_bytes(),
    );
    cli::assert_exit(&out, 1);
}
