//! Structured output (`-o json|yaml`) and the inputs every command reads the same way.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

/// The error and its causes joined by ": ", skipping a cause whose text its parent already
/// carries (errors that embed their source would otherwise print it twice).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `value` as pretty JSON or as YAML, with a trailing newline.
pub(crate) fn render(value: &impl Serialize, yaml: bool) -> Result<String, String> {
    if yaml {
        serde_saphyr::to_string_with_options(
            value,
            // One line per value, like kubectl, rather than folded block scalars.
            serde_saphyr::ser_options! { prefer_block_scalars: false },
        )
        .map_err(|e| format!("cannot write YAML: {e}"))
    } else {
        serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| format!("cannot write JSON: {e}"))
    }
}

/// A file's bytes, or stdin's for `-`.
pub(crate) fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

/// How a path given on the command line is named in messages (`stdin` for `-`).
pub(crate) fn origin(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        path.display().to_string()
    }
}
