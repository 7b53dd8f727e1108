//! Locates the shared, read-only reference directory (`PSI_SHARED_DIR`, else
//! `<CARGO_MANIFEST_DIR>/../shared`, else `/work/shared`), and reads the files in it.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PSI_SHARED_DIR") {
        return PathBuf::from(dir);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared")
}

/// Reads and parses one JSON file under `reference/`.
pub fn reference_json(name: &str) -> serde_json::Value {
    let path = shared_dir().join("reference").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The shared AdmissionReview samples.
pub fn samples_dir() -> PathBuf {
    shared_dir().join("reference/admission_review_samples")
}

/// One shared AdmissionReview sample, as bytes.
pub fn sample(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
