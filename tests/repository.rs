//! What the repository promises outside the code: the licence Cargo.toml names, a changelog
//! for the current version, one version everywhere it is written, and a README whose
//! commands use files that exist.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `key: value` (or `key = "value"`) on a line of its own, unquoted.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(key)?;
        let value = rest.trim_start().strip_prefix([':', '='])?;
        Some(value.trim().trim_matches('"').to_string())
    })
}

#[test]
fn the_license_file_is_the_one_cargo_toml_names() {
    let cargo = read("Cargo.toml");
    assert_eq!(field(&cargo, "license").as_deref(), Some("Apache-2.0"));
    let license = read("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(license.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
}

#[test]
fn one_version_in_cargo_the_chart_and_the_image() {
    let version = env!("CARGO_PKG_VERSION");
    let chart = read("charts/pullsecret-injector/Chart.yaml");
    assert_eq!(
        field(&chart, "version").as_deref(),
        Some(version),
        "chart version"
    );
    assert_eq!(
        field(&chart, "appVersion").as_deref(),
        Some(version),
        "chart appVersion (the image tag it deploys)"
    );
    let kustomization = read("deploy/base/kustomization.yaml");
    assert_eq!(
        field(&kustomization, "newTag").as_deref(),
        Some(version),
        "deploy/base image tag"
    );
    // Every image tag the docs and the Dockerfile show for this image.
    for path in ["Dockerfile", "docs/install.md", "README.md"] {
        let text = read(path);
        for (i, _) in text.match_indices("pullsecret-injector:") {
            let tag: String = text[i + "pullsecret-injector:".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
                .collect();
            if tag.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                assert_eq!(tag, version, "{path}: image tag");
            }
        }
    }
    let changelog = read("CHANGELOG.md");
    assert!(
        changelog.contains(&format!("## [{version}]")),
        "CHANGELOG.md has no section for {version}"
    );
}

#[test]
fn the_version_test_notices_a_difference() {
    // The check above must be able to fail.
    assert_ne!(
        field("appVersion: \"0.0.9\"\n", "appVersion").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        field("version = \"1.2.3\"\n", "version").as_deref(),
        Some("1.2.3")
    );
}

#[test]
fn readme_says_how_to_install_and_its_examples_use_files_in_the_repository() {
    let readme = read("README.md");
    assert!(
        readme.contains("cargo install --path ."),
        "install from a clone"
    );
    assert!(
        readme.contains("cargo install --git"),
        "install without a clone"
    );
    let rust = field(&read("Cargo.toml"), "rust-version").unwrap();
    assert!(
        readme.contains(&format!("Rust {rust}")),
        "prerequisite: Rust {rust}"
    );
    assert!(
        readme.contains("python3-venv"),
        "prerequisite for the Python tests"
    );

    // Every repository path a shell example of the README names exists.
    let mut checked = 0;
    for block in readme.split("```sh").skip(1) {
        let block = block.split("```").next().unwrap();
        for word in block.split_whitespace() {
            let word = word.trim_start_matches('@').trim_end_matches([';', '\\']);
            let in_repo = ["examples/", "tests/", "charts/", "deploy/", "docs/"]
                .iter()
                .any(|dir| word.starts_with(dir));
            if in_repo {
                assert!(
                    Path::new(&repo().join(word)).exists(),
                    "README names {word}, which is not in the repository"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 3,
        "the README examples name files of the repository ({checked})"
    );
}
