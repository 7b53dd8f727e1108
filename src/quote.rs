//! Cutting request content short before it is quoted in a response or a log line: a field of an
//! AdmissionReview can be megabytes long, and echoing it whole turns one request into a
//! megabyte of log (or of error body).

use std::borrow::Cow;

/// Longest quoted value, in characters.
pub(crate) const MAX_QUOTED_CHARS: usize = 64;

/// `value` itself when short, else its first `MAX_QUOTED_CHARS` characters, `…` and how long
/// it was.
pub(crate) fn short(value: &str) -> Cow<'_, str> {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => Cow::Borrowed(value),
        Some((end, _)) => Cow::Owned(format!("{}…({} bytes)", &value[..end], value.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_pass_and_long_ones_are_cut_on_a_char_boundary() {
        assert_eq!(short("Pod"), "Pod");
        let exact = "x".repeat(MAX_QUOTED_CHARS);
        assert_eq!(short(&exact), exact.as_str());
        let long = "é".repeat(1_000_000);
        let cut = short(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_QUOTED_CHARS)));
        assert!(cut.ends_with("…(2000000 bytes)"), "{cut}");
        assert!(cut.len() < 200);
    }
}
