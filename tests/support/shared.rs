//! Reads the reference fixtures kept in the repository (`tests/fixtures/reference/`: facts
//! from the upstream Kubernetes and distribution sources, each table naming its source).
#![allow(dead_code)]

use std::path::PathBuf;

/// `tests/fixtures/reference/` in this checkout.
pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

/// Reads and parses one JSON table of the reference fixtures.
pub fn reference_json(name: &str) -> serde_json::Value {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The AdmissionReview samples.
pub fn samples_dir() -> PathBuf {
    reference_dir().join("admission_review_samples")
}

/// One AdmissionReview sample, as bytes.
pub fn sample(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
