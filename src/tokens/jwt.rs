//! The little of JWTs the minters need: reading `exp`, and encoding segments.

#[cfg(feature = "azure")]
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `exp` of a compact JWT, unverified.
#[cfg(feature = "azure")]
pub(crate) fn expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs(exp as u64))
}

/// base64url without padding, as JWS segments are written.
#[cfg(feature = "google")]
pub(crate) fn segment(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(all(test, feature = "azure"))]
mod tests {
    use super::*;

    #[test]
    fn exp_is_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":1764620000,"sub":"x"}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln");
        assert_eq!(
            expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_764_620_000))
        );
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry("a.!!!.c"), None);
        let no_exp = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(expiry(&format!("a.{no_exp}.c")), None);
    }
}
