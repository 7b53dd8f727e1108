//! Every case of the shared reference tables (`image_refs.json`, `kubelet_keyring.json`)
//! holds for our image parser and keyring. Each test reports all failing cases at once.

mod support {
    pub mod shared;
}

use pullsecret_injector::keyring::{Keyring, index_key, is_default_registry_match, urls_match};
use pullsecret_injector::reference::{ImageRef, lookup_target};
use serde_json::Value;
use support::shared::reference_json;

fn cases<'a>(doc: &'a Value, section: &str) -> &'a [Value] {
    let list = doc[section]
        .as_array()
        .unwrap_or_else(|| panic!("section {section} is missing or not a list"));
    assert!(!list.is_empty(), "section {section} is empty");
    list
}

fn text<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing or not a string in {case}"))
}

fn flag(case: &Value, field: &str) -> bool {
    case[field]
        .as_bool()
        .unwrap_or_else(|| panic!("field {field} missing or not a bool in {case}"))
}

fn report(what: &str, total: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {total} {what} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn image_references_normalize_like_the_kubelet() {
    let doc = reference_json("image_refs.json");
    let cases = cases(&doc, "cases");
    assert_eq!(
        doc["case_count"].as_u64(),
        Some(cases.len() as u64),
        "case_count disagrees with the list"
    );
    let mut failures = Vec::new();
    for case in cases {
        let input = text(case, "input");
        let id = &case["id"];
        match (ImageRef::parse(input), flag(case, "valid")) {
            (Ok(parsed), true) => {
                let optional = |v: &Option<String>| v.as_deref().map_or(Value::Null, Value::from);
                let got = [
                    ("registry", Value::from(parsed.registry.as_str())),
                    ("repository", Value::from(parsed.repository.as_str())),
                    ("tag", optional(&parsed.tag)),
                    ("digest", optional(&parsed.digest)),
                    ("canonical", Value::from(parsed.canonical())),
                    ("familiar", Value::from(parsed.familiar())),
                    ("docker_ref", Value::from(parsed.docker_ref())),
                    ("kubelet_lookup_target", Value::from(parsed.lookup_target())),
                ];
                for (field, value) in got {
                    if case[field] != value {
                        failures.push(format!(
                            "#{id} {input:?}: {field} = {value}, expected {}",
                            case[field]
                        ));
                    }
                }
            }
            (Ok(parsed), false) => failures.push(format!(
                "#{id} {input:?}: parsed as {parsed:?}, expected error {}",
                case["error"]
            )),
            (Err(e), true) => failures.push(format!(
                "#{id} {input:?}: error {}, expected valid",
                e.class()
            )),
            (Err(e), false) => {
                if e.class() != text(case, "error") {
                    failures.push(format!(
                        "#{id} {input:?}: error {}, expected {}",
                        e.class(),
                        case["error"]
                    ));
                }
            }
        }
        // The request path's direct lookup target: the same target, or the same error.
        let expected = if flag(case, "valid") {
            Ok(text(case, "kubelet_lookup_target"))
        } else {
            Err(text(case, "error"))
        };
        let direct = lookup_target(input);
        if direct.as_deref().map_err(|e| e.class()) != expected {
            failures.push(format!(
                "#{id} {input:?}: lookup_target = {direct:?}, expected {expected:?}"
            ));
        }
    }
    report("image_refs", cases.len(), &failures);
}

#[test]
fn index_keys_match_lookup_targets_like_urls_match() {
    let doc = reference_json("kubelet_keyring.json");
    let cases = cases(&doc, "url_match_cases");
    let mut failures = Vec::new();
    for case in cases {
        let (glob, target, want) = (
            text(case, "glob_key"),
            text(case, "target"),
            flag(case, "match"),
        );
        let got = urls_match(glob, target);
        if got != want {
            failures.push(format!(
                "urls_match({glob:?}, {target:?}) = {got}, expected {want}"
            ));
        }
    }
    report("url_match", cases.len(), &failures);
}

#[test]
fn auths_keys_normalize_to_index_keys() {
    let doc = reference_json("kubelet_keyring.json");
    let cases = cases(&doc, "key_normalization_cases");
    let mut failures = Vec::new();
    for case in cases {
        let (key, want) = (text(case, "auths_key"), text(case, "index_key"));
        let got = index_key(key);
        if got.as_deref() != Some(want) {
            failures.push(format!("index_key({key:?}) = {got:?}, expected {want:?}"));
        }
    }
    report("key_normalization", cases.len(), &failures);
}

#[test]
fn docker_hub_fallback_applies_to_default_registry_targets() {
    let doc = reference_json("kubelet_keyring.json");
    let cases = cases(&doc, "is_default_registry_match_cases");
    let mut failures = Vec::new();
    for case in cases {
        let (image, want) = (text(case, "image"), flag(case, "expected"));
        let got = is_default_registry_match(image);
        if got != want {
            failures.push(format!(
                "is_default_registry_match({image:?}) = {got}, expected {want}"
            ));
        }
    }
    report("is_default_registry_match", cases.len(), &failures);
}

#[test]
fn keyring_lookup_returns_credentials_in_kubelet_order() {
    let doc = reference_json("kubelet_keyring.json");
    let cases = cases(&doc, "lookup_cases");
    let mut failures = Vec::new();
    for case in cases {
        let auths = case["auths"]
            .as_array()
            .unwrap_or_else(|| panic!("auths missing in {case}"));
        let mut ring = Keyring::new();
        let mut keys = Vec::new();
        for auth in auths {
            let key = text(auth, "key");
            keys.push(key);
            if !ring.add(key, text(auth, "cred").to_owned()) {
                failures.push(format!("auths {keys:?}: key {key:?} was skipped"));
            }
        }
        let target = text(case, "lookup_target");
        let label = format!("auths {keys:?}, lookup {target:?}");
        if let Some(want_index) = case.get("index_after_add") {
            let got_index = Value::from(ring.index_keys());
            if &got_index != want_index {
                failures.push(format!("{label}: index {got_index}, expected {want_index}"));
            }
        }
        let lookup = ring.lookup(target);
        let got: Vec<&str> = lookup
            .matches
            .iter()
            .map(|e| e.credential.as_str())
            .collect();
        let want: Vec<&str> = case["creds_in_order"]
            .as_array()
            .unwrap_or_else(|| panic!("creds_in_order missing in {case}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if got != want || lookup.found() != flag(case, "found") {
            failures.push(format!(
                "{label}: found={} creds {got:?}, expected found={} creds {want:?}",
                lookup.found(),
                case["found"]
            ));
        }
    }
    report("lookup", cases.len(), &failures);
}
