//! When a registry token stops working: the one place that knows how an expiry is written.
//!
//! Two sources: the Secrets whose tokens `serve` mints itself carry the annotation
//! [`ANNOTATION_EXPIRES_AT`] (RFC 3339), and an ECR password is base64 of a JSON envelope whose
//! `expiration` field is the Unix time the token dies. Nothing here keeps or returns a
//! password: only the instant.

use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;

/// RFC 3339 instant after which the token in this Secret no longer authenticates. Written by
/// the token minter (`tokens::build_secret`) on the Secrets it fills; read by `diagnose` and the admission
/// warning.
pub(crate) const ANNOTATION_EXPIRES_AT: &str = "pullsecret-injector.io/expires-at";

/// Seconds since the Unix epoch.
pub(crate) type UnixTime = i64;

/// The current time in Unix seconds.
pub(crate) fn now() -> UnixTime {
    Timestamp::now().as_second()
}

/// Parses an RFC 3339 timestamp (`2026-01-01T12:00:00Z`); `None` when it is not one.
pub(crate) fn parse_rfc3339(text: &str) -> Option<UnixTime> {
    text.trim().parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// Formats Unix seconds as RFC 3339 in UTC, for messages.
pub(crate) fn format_rfc3339(at: UnixTime) -> String {
    Timestamp::from_second(at).map_or_else(|_| at.to_string(), |t| t.to_string())
}

/// The expiry in an ECR password: base64 (standard, padded or not) of a JSON object with a
/// numeric `expiration`. Any other password gives `None`.
pub(crate) fn ecr_password_expiry(password: &str) -> Option<UnixTime> {
    // An ECR password is long (about 1.5 kB); do not decode arbitrary short strings.
    if password.len() < 16 || !password.starts_with("ey") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(password.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(password.trim()))
        .ok()?;
    let envelope: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match envelope.get("expiration")? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.parse().ok().or_else(|| parse_rfc3339(s)),
        _ => None,
    }
}

/// "3h 5m ago" / "in 12m": how far `at` is from `now`, for messages.
pub(crate) fn relative(at: UnixTime, now: UnixTime) -> String {
    let delta = (now - at).abs();
    let text = if delta >= 86_400 {
        format!("{}d {}h", delta / 86_400, delta % 86_400 / 3600)
    } else if delta >= 3600 {
        format!("{}h {}m", delta / 3600, delta % 3600 / 60)
    } else if delta >= 60 {
        format!("{}m", delta / 60)
    } else {
        format!("{delta}s")
    };
    if at <= now {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(expiration: serde_json::Value) -> String {
        let json = serde_json::json!({
            "payload": "opaque", "datakey": "opaque", "version": "2", "type": "DATA_KEY",
            "expiration": expiration,
        });
        base64::engine::general_purpose::STANDARD.encode(json.to_string())
    }

    #[test]
    fn ecr_envelope_expiry_is_read() {
        assert_eq!(
            ecr_password_expiry(&envelope(1_700_000_000.into())),
            Some(1_700_000_000)
        );
        assert_eq!(
            ecr_password_expiry(&envelope("1700000000".into())),
            Some(1_700_000_000)
        );
        assert_eq!(ecr_password_expiry("hunter2hunter2hunter2"), None);
        assert_eq!(
            ecr_password_expiry(&envelope(serde_json::Value::Null)),
            None
        );
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-01-01T01:00:00+01:00"), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(relative(t - 3700, t), "1h 1m ago");
        assert_eq!(relative(t + 120, t), "in 2m");
    }
}
