//! Container image references, parsed and normalized exactly as the kubelet does
//! (distribution/reference `ParseNormalizedNamed`).
//!
//! A hand-written parser for the distribution/reference grammar: it runs on every admission,
//! and the grammar is small enough that each production is a few lines below.

use thiserror::Error;

/// Docker Hub's domain after normalization (`nginx` is `docker.io/library/nginx`).
pub(crate) const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Hosts of Docker Hub's registry API that images are never written with: the kubelet
/// normalizes Docker Hub images to [`DEFAULT_DOMAIN`], so patterns and keys on these hosts
/// only match images that spell the host out.
pub(crate) const DOCKER_HUB_API_HOSTS: [&str; 3] = [
    "registry-1.docker.io",
    "registry.hub.docker.com",
    "hub.docker.com",
];
/// Every host name people write for Docker Hub in registry keys: the API hosts above, and
/// `index.docker.io`, which alone is reached, through the kubelet's Docker Hub fallback.
pub(crate) const DOCKER_HUB_HOSTS: [&str; 4] = [
    DOCKER_HUB_API_HOSTS[0],
    DOCKER_HUB_API_HOSTS[1],
    DOCKER_HUB_API_HOSTS[2],
    LEGACY_DEFAULT_DOMAIN,
];
const OFFICIAL_REPO_PREFIX: &str = "library/";
const LOCALHOST: &str = "localhost";
const DEFAULT_TAG: &str = "latest";
/// `RepositoryNameTotalLengthMax`: applies to the path, not the domain.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Normalized registry host[:port]: `docker.io` for Docker Hub. Empty only in the rare
    /// case where distribution/reference itself finds no domain (a first component such as
    /// `my_registry.local` that is not a valid host but is a valid path component).
    pub registry: String,
    /// Path below the registry; `library/` added for single-component Docker Hub names.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name must be lowercase")]
    NameContainsUppercase,
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("cannot specify 64-byte hexadecimal strings")]
    Identifier64Hex,
    #[error("invalid digest format")]
    DigestInvalidFormat,
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
}

impl ReferenceError {
    /// The distribution/reference error variable name, as used in `image_refs.json`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::InvalidFormat => "ErrReferenceInvalidFormat",
            Self::NameContainsUppercase => "ErrNameContainsUppercase",
            Self::NameEmpty => "ErrNameEmpty",
            Self::NameTooLong => "ErrNameTooLong",
            Self::Identifier64Hex => "ErrIdentifier64Hex",
            Self::DigestInvalidFormat => "ErrDigestInvalidFormat",
            Self::DigestInvalidLength => "ErrDigestInvalidLength",
            Self::DigestUnsupported => "ErrDigestUnsupported",
        }
    }
}

impl ImageRef {
    /// `ParseNormalizedNamed`: familiar names become fully qualified, `index.docker.io`
    /// folds to `docker.io`. Tag and digest are kept as written (no `latest` default).
    pub fn parse(image: &str) -> Result<Self, ReferenceError> {
        let normalized = normalize(image)?;
        let m = parse_reference(&normalized)?;
        Ok(ImageRef {
            registry: m.domain.unwrap_or_default().to_owned(),
            repository: m.path.to_owned(),
            tag: m.tag.map(str::to_owned),
            digest: m.digest.map(str::to_owned),
        })
    }

    /// `Name()`: `registry/repository` (just the repository when there is no registry).
    pub(crate) fn name(&self) -> String {
        if self.registry.is_empty() {
            self.repository.clone()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// `registry/repository`: the string the kubelet hands to its keyring lookup.
    pub fn lookup_target(&self) -> String {
        self.name()
    }

    /// The full normalized string, keeping both tag and digest.
    pub fn canonical(&self) -> String {
        let mut out = self.name();
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }

    /// `FamiliarName`: `docker.io/` dropped, and `library/` too for single-component names.
    pub fn familiar(&self) -> String {
        if self.registry != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.repository.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.repository.clone(),
        }
    }

    /// `ParseDockerRef`: what a runtime pulls. The digest wins over the tag; `latest` is
    /// added when there is neither.
    pub fn docker_ref(&self) -> String {
        let name = self.name();
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{name}@{digest}"),
            (None, Some(tag)) => format!("{name}:{tag}"),
            (None, None) => format!("{name}:{DEFAULT_TAG}"),
        }
    }
}

/// The lookup target (`registry/repository`) of an image as written: what
/// `ImageRef::parse(image)?.lookup_target()` returns, with one allocation instead of several
/// (the request path parses every image of every Pod).
pub fn lookup_target(image: &str) -> Result<String, ReferenceError> {
    let mut normalized = normalize(image)?;
    // The name is the start of the normalized string: `name (":" tag)? ("@" digest)?`.
    let name_len = parse_reference(&normalized)?.name.len();
    normalized.truncate(name_len);
    Ok(normalized)
}

/// `ParseNormalizedNamed` up to the final `Parse`: the `domain/remainder` string it parses.
fn normalize(image: &str) -> Result<String, ReferenceError> {
    if is_identifier(image) {
        return Err(ReferenceError::Identifier64Hex);
    }
    let (domain, official, remote) = split_docker_domain(image);
    // The lowercase check covers everything up to the first ':' of the remainder,
    // which may include an `@algorithm` when there is no tag (upstream quirk kept). The
    // `library/` prefix, when added, is lowercase and has no ':'.
    let head = remote.split(':').next().unwrap_or_default();
    if go_to_lower(head) != head {
        return Err(ReferenceError::NameContainsUppercase);
    }
    let prefix = if official { OFFICIAL_REPO_PREFIX } else { "" };
    let mut out = String::with_capacity(domain.len() + 1 + prefix.len() + remote.len());
    out.push_str(domain);
    out.push('/');
    out.push_str(prefix);
    out.push_str(remote);
    Ok(out)
}

/// `splitDockerDomain`: decides from the first `/`-component alone whether it names a
/// registry. No `/` at all means a Docker Hub image (so `localhost:5000` is `library/localhost`
/// with tag `5000`). Returns the domain, whether `library/` goes before the remote name, and
/// the remote name.
fn split_docker_domain(name: &str) -> (&str, bool, &str) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN, true, name);
    };
    let (domain, remote) = if maybe_domain == LOCALHOST {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || go_to_lower(maybe_domain) != maybe_domain {
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    (
        domain,
        domain == DEFAULT_DOMAIN && !remote.contains('/'),
        remote,
    )
}

/// `Parse` on the already split `domain/remainder` string.
fn parse_reference(s: &str) -> Result<Matched<'_>, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::NameEmpty);
    }
    let Some(m) = match_reference(s) else {
        let lower = go_to_lower(s);
        if lower != s && match_reference(&lower).is_some() {
            return Err(ReferenceError::NameContainsUppercase);
        }
        return Err(ReferenceError::InvalidFormat);
    };
    if m.path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::NameTooLong);
    }
    if let Some(digest) = m.digest {
        validate_digest(digest)?;
    }
    Ok(m)
}

struct Matched<'a> {
    /// `domain "/" path`, or `path` alone: the start of the matched string.
    name: &'a str,
    domain: Option<&'a str>,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// The anchored `ReferenceRegexp`: `name (":" tag)? ("@" digest)?`.
///
/// `@` appears nowhere but before the digest, and `:` in a name only inside its domain
/// (which a `/` always follows), so a `:` with no `/` after it can only start the tag.
fn match_reference(s: &str) -> Option<Matched<'_>> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => {
            if !is_digest_pattern(digest) {
                return None;
            }
            (rest, Some(digest))
        }
        None => (s, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => {
            let tag = &rest[i + 1..];
            if !is_tag(tag) {
                return None;
            }
            (&rest[..i], Some(tag))
        }
        _ => (rest, None),
    };
    // `(domainAndPort "/")? remoteName`: the optional group is greedy, so a valid domain
    // is taken when the rest still matches; otherwise the whole name must be a path.
    if let Some((domain, path)) = name.split_once('/')
        && is_domain_and_port(domain)
        && is_remote_name(path)
    {
        return Some(Matched {
            name,
            domain: Some(domain),
            path,
            tag,
            digest,
        });
    }
    if is_remote_name(name) {
        return Some(Matched {
            name,
            domain: None,
            path: name,
            tag,
            digest,
        });
    }
    None
}

/// `[a-f0-9]{64}`: an image ID, never a name.
fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `pathComponent ("/" pathComponent)*`.
fn is_remote_name(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `[a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `(domainName | "[" [a-fA-F0-9:]+ "]") (":" [0-9]+)?`.
fn is_domain_and_port(s: &str) -> bool {
    let (host_ok, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some(end) = inner.find(']') else {
            return false;
        };
        let addr = &inner[..end];
        let ok = !addr.is_empty() && addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        (ok, &inner[end + 1..])
    } else {
        match s.find(':') {
            Some(i) => (is_domain_name(&s[..i]), &s[i..]),
            None => (is_domain_name(s), ""),
        }
    };
    host_ok
        && (port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())))
}

/// Dot-separated components of `[a-zA-Z0-9-]`, neither starting nor ending with `-`.
fn is_domain_name(s: &str) -> bool {
    s.split('.').all(|c| {
        let b = c.as_bytes();
        !b.is_empty()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// distribution's `digestPat`:
/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)* ":" [[:xdigit:]]{32,}`.
fn is_digest_pattern(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return false;
    };
    hex.len() >= 32
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            let b = part.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        })
}

/// go-digest v1.0.0 `Digest.Validate`, with sha256, sha384 and sha512 available (the
/// kubelet links crypto/sha512, which registers both).
fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let Some((algorithm, encoded)) = d
        .split_once(':')
        .filter(|(a, e)| !a.is_empty() && !e.is_empty())
    else {
        return Err(ReferenceError::DigestInvalidFormat);
    };
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ if go_digest_pattern(algorithm, encoded) => {
            return Err(ReferenceError::DigestUnsupported);
        }
        _ => return Err(ReferenceError::DigestInvalidFormat),
    };
    if encoded.len() != hex_len {
        return Err(ReferenceError::DigestInvalidLength);
    }
    if !encoded
        .bytes()
        .all(|c| matches!(c, b'a'..=b'f' | b'0'..=b'9'))
    {
        return Err(ReferenceError::DigestInvalidFormat);
    }
    Ok(())
}

/// go-digest `DigestRegexp`: `[a-z0-9]+([.+_-][a-z0-9]+)* ":" [a-zA-Z0-9=_-]+`.
fn go_digest_pattern(algorithm: &str, encoded: &str) -> bool {
    algorithm.split(['.', '+', '_', '-']).all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    }) && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'))
}

/// Go `strings.ToLower`: simple per-rune case mapping. Rust's `to_lowercase` is the full
/// mapping, which differs only for U+0130 (Go maps it to a plain `i`).
fn go_to_lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let lowered = s
        .chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            _ => {
                let mut lower = c.to_lowercase();
                match (lower.next(), lower.next()) {
                    (Some(l), None) => l,
                    _ => c,
                }
            }
        })
        .collect();
    std::borrow::Cow::Owned(lowered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ImageRef {
        match ImageRef::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s:?} should parse, got {e}"),
        }
    }

    fn err(s: &str) -> &'static str {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s:?} should fail, got {r:?}"),
            Err(e) => e.class(),
        }
    }

    #[test]
    fn underscore_domain_is_reparsed_as_a_path_without_registry() {
        // `my_registry.local` is picked as a domain by splitDockerDomain (it has a '.'),
        // fails the host grammar, and the regexp falls back to a domain-less path.
        let r = ok("my_registry.local/app:1");
        assert_eq!(r.registry, "");
        assert_eq!(r.repository, "my_registry.local/app");
        assert_eq!(r.lookup_target(), "my_registry.local/app");
        assert_eq!(r.familiar(), "my_registry.local/app");
        assert_eq!(r.docker_ref(), "my_registry.local/app:1");
    }

    #[test]
    fn uppercase_domain_that_is_no_host_reports_uppercase() {
        assert_eq!(err("Foo_Bar/x"), "ErrNameContainsUppercase");
        // Kelvin sign lowercases to ASCII 'k' in Go, so the lowered string parses.
        assert_eq!(err("\u{212A}ube.io/x"), "ErrNameContainsUppercase");
        assert_eq!(err("\u{130}x.io/x"), "ErrNameContainsUppercase");
    }

    #[test]
    fn path_separators() {
        assert!(is_path_component("a__b"));
        assert!(is_path_component("a---b"));
        assert!(!is_path_component("a___b"));
        assert!(!is_path_component("a._b"));
        assert!(!is_path_component("a-"));
        assert!(!is_path_component(""));
    }

    #[test]
    fn tag_limits() {
        let long = "a".repeat(128);
        assert_eq!(
            ok(&format!("nginx:{long}")).tag.as_deref(),
            Some(long.as_str())
        );
        assert_eq!(err(&format!("nginx:{long}a")), "ErrReferenceInvalidFormat");
        assert_eq!(err("nginx:"), "ErrReferenceInvalidFormat");
        assert_eq!(err("nginx:-x"), "ErrReferenceInvalidFormat");
        assert_eq!(ok("nginx:_x.y-Z").tag.as_deref(), Some("_x.y-Z"));
    }

    #[test]
    fn name_length_counts_the_path_with_library_prefix() {
        // library/ + 247 = 255: allowed; one more is too long.
        assert!(ImageRef::parse(&"a".repeat(247)).is_ok());
        assert_eq!(err(&"a".repeat(248)), "ErrNameTooLong");
        // The domain does not count.
        let long_domain = format!("{}.com/x", "a".repeat(300));
        assert!(ImageRef::parse(&long_domain).is_ok());
    }

    #[test]
    fn digests() {
        let h64 = "a".repeat(64);
        assert_eq!(
            err(&format!("x@sha256:{}", "A".repeat(64))),
            "ErrDigestInvalidFormat"
        );
        assert_eq!(
            ok(&format!("x@sha384:{}", "b".repeat(96)))
                .digest
                .map(|d| d.len()),
            Some(103)
        );
        assert_eq!(err(&format!("x@sha512:{h64}")), "ErrDigestInvalidLength");
        assert_eq!(err(&format!("x@sha256+b64:{h64}")), "ErrDigestUnsupported");
        // Uppercase algorithm after a tag: not in go-digest's pattern.
        assert_eq!(err(&format!("x:t@SHA256:{h64}")), "ErrDigestInvalidFormat");
        // Without a tag the remote-name lowercase check sees `@SHA256` first.
        assert_eq!(err(&format!("x@SHA256:{h64}")), "ErrNameContainsUppercase");
        assert_eq!(
            err(&format!("x@sha256:{h64}@sha256:{h64}")),
            "ErrReferenceInvalidFormat"
        );
        // A name too long wins over a bad digest (length is checked first).
        assert_eq!(
            err(&format!("{}@sha256:{}", "a".repeat(300), "f".repeat(40))),
            "ErrNameTooLong"
        );
    }

    #[test]
    fn ipv6_hosts() {
        assert_eq!(ok("[::1]/r").registry, "[::1]");
        assert_eq!(err("[::1]:/r"), "ErrReferenceInvalidFormat");
        assert_eq!(err("[]/r"), "ErrReferenceInvalidFormat");
        assert_eq!(err("[::g]:5000/r"), "ErrReferenceInvalidFormat");
    }

    #[test]
    fn non_ascii_is_rejected_without_panic() {
        assert_eq!(err("ngïnx"), "ErrReferenceInvalidFormat");
        assert_eq!(err("reg.io/ngÏnx"), "ErrNameContainsUppercase");
        assert_eq!(err("é.io/x"), "ErrReferenceInvalidFormat");
    }
}
