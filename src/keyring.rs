//! The kubelet's credential matching (`pkg/credentialprovider` BasicDockerKeyring):
//! `auths` keys become index keys, index keys are matched against `registry/repository`
//! with URLsMatch, and Lookup returns every match in reverse byte order, else the
//! Docker Hub fallback.
//!
//! The kubelet leans on Go's `net/url`, `net.SplitHostPort` and `path/filepath.Match`; the
//! private helpers below reproduce the parts of them it depends on, quirks included
//! (`filepath.Match` is [`crate::glob`], shared with the policy).

use std::net::Ipv6Addr;

use crate::glob;

/// The index key under which the kubelet keeps Docker Hub's `https://index.docker.io/v1/`.
pub(crate) const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// The index key the kubelet derives from an `auths` key, or `None` when it skips the key
/// (its URL does not parse).
pub fn index_key(auths_key: &str) -> Option<String> {
    // The scheme test is case-sensitive: `HTTPS://x` gets a second scheme prepended.
    let url = if auths_key.starts_with("https://") {
        GoUrl::parse_after_scheme(&auths_key["https:".len()..])?
    } else if auths_key.starts_with("http://") {
        GoUrl::parse_after_scheme(&auths_key["http:".len()..])?
    } else {
        GoUrl::parse_schemeless(auths_key)?
    };
    // `/v1/` and `/v2/` (with the slash) mean "the registry root", as in the docker CLI.
    let path = match url.path.get(..4) {
        Some("/v1/" | "/v2/") => &url.path[3..],
        _ => url.path.as_str(),
    };
    if path.is_empty() || path == "/" {
        Some(url.host)
    } else {
        Some(url.host + path)
    }
}

/// URLsMatch: does index key (glob) `glob` match lookup target `target`?
///
/// Both are read as schemeless URLs; a string that does not parse matches nothing. A
/// pattern written with `https://` must go through [`index_key`] (or [`RegistryPattern`])
/// first, as the kubelet does for `auths` keys.
pub fn urls_match(glob: &str, target: &str) -> bool {
    SchemelessUrl::parse(glob).matches(&SchemelessUrl::parse(target))
}

/// One side of URLsMatch (a glob or a lookup target) read once as a schemeless URL, so a
/// policy's patterns are parsed at load and an image's target once per Pod, not per rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemelessUrl(Option<GoUrl>);

impl SchemelessUrl {
    /// A string that does not parse is kept as `None` and matches nothing, as in the kubelet.
    pub(crate) fn parse(s: &str) -> Self {
        Self(GoUrl::parse_schemeless(s))
    }

    /// The host without its port, as URLsMatch compares it label by label; `None` when the
    /// string did not parse (it matches nothing). Lets a policy index its patterns by host.
    pub(crate) fn hostname(&self) -> Option<&str> {
        self.0
            .as_ref()
            .map(|url| split_host_port_or_whole(&url.host).0)
    }

    /// URLsMatch with `self` as the glob.
    pub(crate) fn matches(&self, target: &SchemelessUrl) -> bool {
        match (&self.0, &target.0) {
            (Some(glob), Some(target)) => glob.matches(target),
            _ => false,
        }
    }
}

/// isDefaultRegistryMatch.
pub fn is_default_registry_match(target: &str) -> bool {
    let (first, has_slash) = match target.split_once('/') {
        Some((first, _)) => (first, true),
        None => (target, false),
    };
    if first.is_empty() {
        return false;
    }
    !has_slash
        || first == crate::reference::DEFAULT_DOMAIN
        || first == DEFAULT_REGISTRY_KEY
        || !first.contains(['.', ':'])
}

/// A registry pattern (an `auths` key, or a policy's registry entry written the same way),
/// normalized once and ready to match lookup targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPattern {
    index_key: String,
    /// The index key re-read as a schemeless URL; `None` when that fails, so it matches
    /// nothing (the kubelet gets an error from URLsMatchStr and skips the key).
    url: Option<GoUrl>,
}

impl RegistryPattern {
    /// Normalizes like `BasicDockerKeyring.Add`; `None` when the kubelet would skip it.
    pub fn parse(pattern: &str) -> Option<Self> {
        let index_key = index_key(pattern)?;
        let url = GoUrl::parse_schemeless(&index_key);
        Some(Self { index_key, url })
    }

    pub fn index_key(&self) -> &str {
        &self.index_key
    }

    /// URLsMatch of this pattern against a lookup target (`registry/repository`).
    pub fn matches(&self, target: &str) -> bool {
        match (&self.url, GoUrl::parse_schemeless(target)) {
            (Some(glob), Some(target)) => glob.matches(&target),
            _ => false,
        }
    }
}

/// One credential as the keyring holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<C> {
    /// The `auths` key as written in the config.
    pub(crate) key: String,
    /// The key after the kubelet's normalization.
    pub(crate) index_key: String,
    pub credential: C,
}

/// What `Lookup` returns: matches in the order the kubelet tries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup<'a, C> {
    pub matches: Vec<&'a Entry<C>>,
    pub(crate) via_docker_hub_fallback: bool,
}

impl<C> Lookup<'_, C> {
    /// The kubelet's `found`: at least one credential is offered.
    pub fn found(&self) -> bool {
        !self.matches.is_empty()
    }
}

/// One index key with the entries stored under it, in add order.
#[derive(Debug, Clone)]
struct Slot {
    pattern: RegistryPattern,
    entries: Vec<usize>,
}

/// A keyring: credentials added in order (pod secret order, then key order), looked up
/// by the normalized `registry/repository`.
#[derive(Debug, Clone)]
pub struct Keyring<C> {
    entries: Vec<Entry<C>>,
    /// Distinct index keys in descending byte order (the kubelet's reverse `sort.Strings`).
    index: Vec<Slot>,
}

impl<C> Default for Keyring<C> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: Vec::new(),
        }
    }
}

/// Entries are added in iteration order, as the kubelet walks a config's `auths` and a Pod's
/// Secrets; keys it would skip are skipped.
impl<C, K: AsRef<str>> Extend<(K, C)> for Keyring<C> {
    fn extend<I: IntoIterator<Item = (K, C)>>(&mut self, entries: I) {
        for (key, credential) in entries {
            self.add(key.as_ref(), credential);
        }
    }
}

impl<C> Keyring<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one `auths` entry; returns false (and adds nothing) when the kubelet would skip the key.
    pub fn add(&mut self, auths_key: &str, credential: C) -> bool {
        let Some(pattern) = RegistryPattern::parse(auths_key) else {
            return false;
        };
        let entry_no = self.entries.len();
        let position = self
            .index
            .binary_search_by(|slot| pattern.index_key.as_str().cmp(slot.pattern.index_key()));
        let index_key = pattern.index_key.clone();
        match position {
            Ok(found) => self.index[found].entries.push(entry_no),
            Err(at) => self.index.insert(
                at,
                Slot {
                    pattern,
                    entries: vec![entry_no],
                },
            ),
        }
        self.entries.push(Entry {
            key: auths_key.to_owned(),
            index_key,
            credential,
        });
        true
    }

    pub fn lookup(&self, target: &str) -> Lookup<'_, C> {
        let matches: Vec<&Entry<C>> = match GoUrl::parse_schemeless(target) {
            Some(target_url) => self
                .index
                .iter()
                .filter(|slot| {
                    slot.pattern
                        .url
                        .as_ref()
                        .is_some_and(|g| g.matches(&target_url))
                })
                .flat_map(|slot| slot.entries.iter().map(|&i| &self.entries[i]))
                .collect(),
            None => Vec::new(),
        };
        if !matches.is_empty() {
            return Lookup {
                matches,
                via_docker_hub_fallback: false,
            };
        }
        if is_default_registry_match(target)
            && let Some(slot) = self
                .index
                .iter()
                .find(|s| s.pattern.index_key() == DEFAULT_REGISTRY_KEY)
        {
            let matches = slot.entries.iter().map(|&i| &self.entries[i]).collect();
            return Lookup {
                matches,
                via_docker_hub_fallback: true,
            };
        }
        Lookup {
            matches: Vec::new(),
            via_docker_hub_fallback: false,
        }
    }

    pub(crate) fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// The distinct index keys in the order Lookup walks them (descending bytes).
    pub fn index_keys(&self) -> Vec<&str> {
        self.index
            .iter()
            .map(|slot| slot.pattern.index_key())
            .collect()
    }
}

/// The two parts of a Go `url.URL` the keyring reads: `Host` (userinfo dropped) and the
/// decoded `Path`. Query and fragment are parsed past and thrown away.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GoUrl {
    host: String,
    path: String,
}

impl GoUrl {
    /// `ParseSchemelessURL`: `url.Parse("https://" + s)`.
    fn parse_schemeless(s: &str) -> Option<Self> {
        Self::parse_after_slashes(s)
    }

    /// `url.Parse` of `scheme ":" rest` where `rest` starts with `//`.
    fn parse_after_scheme(rest: &str) -> Option<Self> {
        // Stripping `//` before the fragment and query are split off is the same as after:
        // neither holds a `#` or `?`.
        Self::parse_after_slashes(rest.strip_prefix("//")?)
    }

    /// `url.Parse` of `scheme "://" rest`.
    fn parse_after_slashes(rest: &str) -> Option<Self> {
        let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        if rest.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return None;
        }
        unescape(fragment, Mode::Other)?;
        let rest = rest.split_once('?').map_or(rest, |(before, _query)| before);
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let host = parse_authority(authority)?;
        let path = String::from_utf8(unescape(path, Mode::Other)?).ok()?;
        Some(Self { host, path })
    }

    /// URLsMatch on parsed URLs: same port string, same label count, path prefix,
    /// then filepath.Match label by label.
    fn matches(&self, target: &Self) -> bool {
        let (glob_host, glob_port) = split_host_port_or_whole(&self.host);
        let (target_host, target_port) = split_host_port_or_whole(&target.host);
        if glob_port != target_port {
            return false;
        }
        if glob_host.split('.').count() != target_host.split('.').count() {
            return false;
        }
        if !target.path.starts_with(&self.path) {
            return false;
        }
        glob_host
            .split('.')
            .zip(target_host.split('.'))
            .all(|(g, t)| matches!(glob::filepath_match(g.as_bytes(), t.as_bytes()), Ok(true)))
    }
}

/// `parseAuthority`: host after the last `@`; userinfo must be well-formed but is dropped.
fn parse_authority(authority: &str) -> Option<String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host)?;
    if let Some(userinfo) = userinfo {
        let valid = userinfo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c));
        if !valid {
            return None;
        }
        unescape(userinfo, Mode::Other)?;
    }
    Some(host)
}

/// `parseHost` (Go 1.24.8+/1.25.2+: a bracketed host must hold an IPv6 address). A
/// `:port` must be all digits, possibly empty; in an unbracketed host only the text after
/// the last `:` is checked (the Go releases kubelets 1.33 to 1.35 are built with).
fn parse_host(host: &str) -> Option<String> {
    if let Some(bracketed) = host.strip_prefix('[') {
        let close = bracketed.rfind(']')?;
        let colon_port = &bracketed[close + 1..];
        if !valid_optional_port(colon_port) {
            return None;
        }
        let inside = &bracketed[..close];
        let (addr, zone) = match inside.find("%25") {
            Some(z) => (&inside[..z], &inside[z..]),
            None => (inside, ""),
        };
        let addr = String::from_utf8(unescape(addr, Mode::Host)?).ok()?;
        let zone = String::from_utf8(unescape(zone, Mode::Zone)?).ok()?;
        addr.parse::<Ipv6Addr>().ok()?;
        if zone == "%" {
            return None;
        }
        return Some(format!("[{addr}{zone}]{colon_port}"));
    }
    if let Some(i) = host.rfind(':')
        && !valid_optional_port(&host[i..])
    {
        return None;
    }
    String::from_utf8(unescape(host, Mode::Host)?).ok()
}

fn valid_optional_port(colon_port: &str) -> bool {
    colon_port.is_empty()
        || colon_port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Zone,
    /// Path, userinfo, fragment: only the `%XX` escapes are checked.
    Other,
}

/// Go `unescape` (never in query mode, so `+` stays `+`). Hosts may %-encode only
/// non-ASCII bytes (and `%25`), and allow a fixed set of ASCII characters.
fn unescape(s: &str, mode: Mode) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (hi, lo) = (hex_value(*b.get(i + 1)?)?, hex_value(*b.get(i + 2)?)?);
            let is_pct25 = &b[i..i + 3] == b"%25";
            let value = hi << 4 | lo;
            match mode {
                Mode::Host if hi < 8 && !is_pct25 => return None,
                Mode::Zone if !is_pct25 && value != b' ' && host_needs_escape(value) => {
                    return None;
                }
                _ => {}
            }
            out.push(value);
            i += 3;
        } else {
            let c = b[i];
            if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && host_needs_escape(c) {
                return None;
            }
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Go `shouldEscape(c, encodeHost)` for ASCII: what may not appear raw in a host.
fn host_needs_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c))
}

/// `net.SplitHostPort`, falling back to (whole host, no port) on error as `SplitURL` does.
fn split_host_port_or_whole(hostport: &str) -> (&str, &str) {
    split_host_port(hostport).unwrap_or((hostport, ""))
}

fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let last_colon = hostport.rfind(':')?;
    let (host, no_open_from, no_close_from) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        if end + 1 != last_colon {
            return None;
        }
        (&hostport[1..end], 1, end + 1)
    } else {
        let host = &hostport[..last_colon];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hostport[no_open_from..].contains('[') || hostport[no_close_from..].contains(']') {
        return None;
    }
    Some((host, &hostport[last_colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_key_url_parsing() {
        assert_eq!(index_key("my.registry:http").as_deref(), None);
        assert_eq!(
            index_key("http://my.registry:5000/path").as_deref(),
            Some("my.registry:5000/path")
        );
        assert_eq!(index_key("reg.io/v2").as_deref(), Some("reg.io/v2"));
        assert_eq!(index_key("reg.io/v2/org/").as_deref(), Some("reg.io/org/"));
        assert_eq!(index_key("reg.io/v1/").as_deref(), Some("reg.io"));
        assert_eq!(index_key("reg.io?x=1").as_deref(), Some("reg.io"));
        assert_eq!(index_key("reg.io/a?b/c#d").as_deref(), Some("reg.io/a"));
        assert_eq!(index_key("reg?.io").as_deref(), Some("reg"));
        assert_eq!(index_key("user:pw@reg.io/x").as_deref(), Some("reg.io/x"));
        assert_eq!(index_key("reg.io/a%20b").as_deref(), Some("reg.io/a b"));
        assert_eq!(index_key("reg.io/a%zz").as_deref(), None);
        assert_eq!(index_key("reg.io/a#%zz").as_deref(), None);
        assert_eq!(index_key("reg io").as_deref(), None);
        assert_eq!(index_key("reg.io/\n").as_deref(), None);
        assert_eq!(index_key("us{er@reg.io").as_deref(), None);
        assert_eq!(index_key("reg.io:").as_deref(), Some("reg.io:"));
        assert_eq!(index_key("[::1]:5000").as_deref(), Some("[::1]:5000"));
        assert_eq!(index_key("[::1]x").as_deref(), None);
        assert_eq!(index_key("[1.2.3.4]").as_deref(), None);
        assert_eq!(
            index_key("[fe80::1%25eth0]:5000").as_deref(),
            Some("[fe80::1%eth0]:5000")
        );
        assert_eq!(
            index_key("HTTPS://reg.io").as_deref(),
            Some("HTTPS://reg.io")
        );
        // A leading `[` makes the host an IP literal, so a class cannot open a host.
        assert_eq!(index_key("[a-z]*.example.com").as_deref(), None);
        assert_eq!(index_key("").as_deref(), Some(""));
    }

    #[test]
    fn urls_match_ports_labels_paths() {
        assert!(!urls_match("reg:443", "reg/x"));
        assert!(!urls_match("*.example.com", "example.com/x"));
        assert!(!urls_match("*.example.com", "a.b.example.com/x"));
        assert!(urls_match("*.io", "docker.io/library/nginx"));
        assert!(!urls_match("*.docker.io", "docker.io/library/nginx"));
        assert!(urls_match("reg.io/org", "reg.io/organization/app"));
        assert!(!urls_match("reg.io/org/", "reg.io/org"));
        assert!(!urls_match("reg.io/*", "reg.io/app"));
        assert!(urls_match("[::1]:5000", "[::1]:5000/app"));
        assert!(!urls_match("Reg.io", "reg.io/app"));
        assert!(urls_match("reg[0-9].io", "reg7.io/app"));
        assert!(!urls_match("reg[^0-9].io", "reg7.io/app"));
        // `[` in the host makes SplitHostPort fail, so the port stays in the "host".
        assert!(!urls_match("reg[0-9].io:5000", "reg7.io:5000/app"));
        assert!(!urls_match("reg[.io", "reg[.io/app"));
        assert!(urls_match(
            "*.dkr.ecr.*.amazonaws.com",
            "1234.dkr.ecr.eu-west-1.amazonaws.com/app"
        ));
        assert!(!urls_match(
            "registry.gitlab.com/acme/",
            "registry.gitlab.com/acme"
        ));
    }

    #[test]
    fn https_patterns_need_normalizing_first() {
        assert!(!urls_match("https://reg.io", "reg.io/app"));
        let pattern = RegistryPattern::parse("https://reg.io/v2/").expect("parses");
        assert_eq!(pattern.index_key(), "reg.io");
        assert!(pattern.matches("reg.io/app"));
    }

    #[test]
    fn odd_input_never_panics() {
        let alphabet = [
            "a", "[", "]", "^", "-", "\\", "*", "?", ":", "%", "%2", "/", "@", "é", ".",
        ];
        let targets = ["a", "a.b", "é/x", "[::1]:5/x", "a:1/x", ""];
        for x in alphabet {
            for y in alphabet {
                for z in alphabet {
                    let s = format!("{x}{y}{z}");
                    let _ = index_key(&s);
                    let _ = crate::reference::ImageRef::parse(&s);
                    for t in targets {
                        let _ = urls_match(&s, t);
                        let _ = urls_match(t, &s);
                    }
                }
            }
        }
    }

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(split_host_port("a:1"), Some(("a", "1")));
        assert_eq!(split_host_port("a"), None);
        assert_eq!(split_host_port("[::1]:5"), Some(("::1", "5")));
        assert_eq!(split_host_port("[::1]"), None);
        assert_eq!(split_host_port("a:b:c"), None);
        assert_eq!(split_host_port("a:"), Some(("a", "")));
    }

    #[test]
    fn default_registry_match() {
        assert!(is_default_registry_match("localhost/foo"));
        assert!(is_default_registry_match("Foo/bar"));
        assert!(!is_default_registry_match("/foo"));
        assert!(!is_default_registry_match("localhost:5000/foo"));
    }

    #[test]
    fn keyring_orders_and_groups() {
        let mut ring = Keyring::new();
        assert!(ring.add("quay.io", 1));
        assert!(ring.add("https://quay.io/coreos", 2));
        assert!(ring.add("*.example.com/team", 3));
        assert!(ring.add("reg.example.com", 4));
        assert!(ring.add("http://quay.io/v1/", 5));
        assert!(!ring.add("bad:port", 6));
        assert_eq!(
            ring.index_keys(),
            [
                "reg.example.com",
                "quay.io/coreos",
                "quay.io",
                "*.example.com/team"
            ]
        );
        let creds = |target: &str| {
            ring.lookup(target)
                .matches
                .iter()
                .map(|e| e.credential)
                .collect::<Vec<_>>()
        };
        assert_eq!(creds("quay.io/coreos/etcd"), [2, 1, 5]);
        assert_eq!(creds("reg.example.com/team/app"), [4, 3]);
        assert_eq!(ring.entries().len(), 5);
    }

    #[test]
    fn docker_hub_fallback_only_without_direct_match() {
        let mut ring = Keyring::new();
        ring.add("https://index.docker.io/v1/", "hub");
        let hit = ring.lookup("docker.io/library/nginx");
        assert!(hit.via_docker_hub_fallback);
        assert_eq!(hit.matches[0].credential, "hub");
        assert!(!ring.lookup("quay.io/x").found());
        ring.add("docker.io", "direct");
        let hit = ring.lookup("docker.io/library/nginx");
        assert!(!hit.via_docker_hub_fallback);
        assert_eq!(
            hit.matches.iter().map(|e| e.credential).collect::<Vec<_>>(),
            ["direct"]
        );
    }
}
