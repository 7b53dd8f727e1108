//! What the policy compiles so that a decision does not grow with the number of rules:
//! an index of the rules by registry host, and the per-namespace part of the namespace
//! filters computed once per policy and namespace.
//!
//! The index only narrows: every candidate it returns is still checked with the kubelet's
//! URLsMatch (`Rule::matches_parsed_target`), so matching stays exactly the keyring's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::keyring::SchemelessUrl;
use crate::policy::{NamespaceVerdict, Rule};

/// Rules by the host of their registry patterns.
///
/// URLsMatch needs the same number of host labels and matches label by label, where a
/// label without glob characters matches only itself. So a pattern whose host has no glob is
/// found by its host; a glob by its label count and the labels at its end that have no glob
/// (`*.dkr.ecr.*.amazonaws.com`: 6 labels ending in `amazonaws.com`). Ports and paths are left
/// to the full match.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleIndex {
    /// Host (without port) of glob-free patterns -> rules, ascending.
    exact: HashMap<String, Vec<usize>>,
    /// Label count -> groups of globs sharing a number of literal trailing labels.
    globs: HashMap<usize, Vec<SuffixGroup>>,
}

#[derive(Debug, Clone)]
struct SuffixGroup {
    /// How many trailing labels are literal (0: the last label has a glob).
    labels: usize,
    /// Those trailing labels joined with dots -> rules, ascending.
    rules: HashMap<String, Vec<usize>>,
}

fn has_glob(label: &str) -> bool {
    label.contains(['*', '?', '[', '\\'])
}

/// The last `count` labels of `host` (`count` ≤ its label count), as a slice of it.
fn trailing_labels(host: &str, count: usize) -> &str {
    if count == 0 {
        return "";
    }
    let mut seen = 0;
    for (i, b) in host.bytes().enumerate().rev() {
        if b == b'.' {
            seen += 1;
            if seen == count {
                return &host[i + 1..];
            }
        }
    }
    host
}

fn push_rule(list: &mut Vec<usize>, rule: usize) {
    // Rules are added in order, so a repeat can only be the last entry.
    if list.last() != Some(&rule) {
        list.push(rule);
    }
}

impl RuleIndex {
    /// `patterns` yields (rule index, pattern) in rule order.
    pub(crate) fn build<'a>(
        patterns: impl IntoIterator<Item = (usize, &'a SchemelessUrl)>,
    ) -> Self {
        let mut index = Self::default();
        for (rule, pattern) in patterns {
            // A pattern that does not parse matches nothing: not indexed.
            let Some(host) = pattern.hostname() else {
                continue;
            };
            let labels: Vec<&str> = host.split('.').collect();
            let literal = labels.iter().rev().take_while(|l| !has_glob(l)).count();
            if literal == labels.len() {
                push_rule(index.exact.entry(host.to_string()).or_default(), rule);
                continue;
            }
            let groups = index.globs.entry(labels.len()).or_default();
            let group = match groups.iter().position(|g| g.labels == literal) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(SuffixGroup {
                        labels: literal,
                        rules: HashMap::new(),
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            let suffix = trailing_labels(host, literal).to_string();
            push_rule(group.rules.entry(suffix).or_default(), rule);
        }
        index
    }

    /// Appends to `out` every rule whose patterns might match `target`: a superset of the
    /// matching rules, unsorted, possibly with repeats.
    pub(crate) fn candidates(&self, target: &SchemelessUrl, out: &mut Vec<usize>) {
        let Some(host) = target.hostname() else {
            return;
        };
        if let Some(rules) = self.exact.get(host) {
            out.extend_from_slice(rules);
        }
        if self.globs.is_empty() {
            return;
        }
        let labels = host.split('.').count();
        for group in self.globs.get(&labels).into_iter().flatten() {
            if let Some(rules) = group.rules.get(trailing_labels(host, group.labels)) {
                out.extend_from_slice(rules);
            }
        }
    }
}

/// Most namespaces whose verdicts are kept per policy; past that the cache starts over (a
/// cluster with more namespaces pays the name filters again, never unbounded memory).
const MAX_CACHED_NAMESPACES: usize = 16_384;

/// The name-based part of every rule's namespace filter (include/exclude globs), per
/// namespace, computed on first use. Label selectors are evaluated per request, for the
/// rules that matched an image only: labels change while the name does not.
#[derive(Debug, Default)]
pub(crate) struct NamespaceVerdicts {
    /// Rules that have a namespace filter, in rule order; a rule's position here is its bit.
    filtered: Vec<usize>,
    /// Rule index -> position in `filtered`.
    slot: HashMap<usize, usize>,
    cache: RwLock<HashMap<String, Arc<NameVerdicts>>>,
}

impl Clone for NamespaceVerdicts {
    fn clone(&self) -> Self {
        Self {
            filtered: self.filtered.clone(),
            slot: self.slot.clone(),
            cache: RwLock::default(),
        }
    }
}

#[derive(Debug)]
struct NameVerdicts {
    /// Bit per filtered rule: its include/exclude globs admit the namespace.
    admitted: Vec<u64>,
    /// Some admitted rule has a selector: the namespace's labels decide.
    needs_labels: bool,
}

impl NameVerdicts {
    fn admitted(&self, slot: usize) -> bool {
        self.admitted[slot / 64] & (1 << (slot % 64)) != 0
    }
}

impl NamespaceVerdicts {
    pub(crate) fn new(rules: &[Rule]) -> Self {
        let filtered: Vec<usize> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.has_namespace_filter())
            .map(|(i, _)| i)
            .collect();
        let slot = filtered.iter().enumerate().map(|(s, &r)| (r, s)).collect();
        Self {
            filtered,
            slot,
            cache: RwLock::default(),
        }
    }

    fn for_namespace(&self, rules: &[Rule], namespace: &str) -> Option<Arc<NameVerdicts>> {
        if self.filtered.is_empty() {
            return None;
        }
        if let Some(found) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
        {
            return Some(found.clone());
        }
        let mut admitted = vec![0u64; self.filtered.len().div_ceil(64)];
        let mut needs_labels = false;
        for (slot, &rule) in self.filtered.iter().enumerate() {
            if rules[rule].name_admits(namespace) {
                admitted[slot / 64] |= 1 << (slot % 64);
                needs_labels |= rules[rule].has_selector();
            }
        }
        let verdicts = Arc::new(NameVerdicts {
            admitted,
            needs_labels,
        });
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_NAMESPACES {
            cache.clear();
        }
        cache.insert(namespace.to_string(), verdicts.clone());
        Some(verdicts)
    }

    /// The verdicts of `rules` (the policy's, the ones this was built from) for a namespace.
    pub(crate) fn view<'p>(
        &'p self,
        rules: &'p [Rule],
        namespace: &str,
        labels: Option<&'p BTreeMap<String, String>>,
    ) -> NamespaceView<'p> {
        NamespaceView {
            verdicts: self,
            rules,
            names: self.for_namespace(rules, namespace),
            labels,
        }
    }
}

/// One namespace as the rules see it.
pub(crate) struct NamespaceView<'p> {
    verdicts: &'p NamespaceVerdicts,
    rules: &'p [Rule],
    names: Option<Arc<NameVerdicts>>,
    labels: Option<&'p BTreeMap<String, String>>,
}

impl NamespaceView<'_> {
    /// Whether rule `index` may act in the namespace.
    pub(crate) fn verdict(&self, index: usize) -> NamespaceVerdict {
        let (Some(slot), Some(names)) = (self.verdicts.slot.get(&index), &self.names) else {
            return NamespaceVerdict::Applies;
        };
        if !names.admitted(*slot) {
            return NamespaceVerdict::Excluded;
        }
        self.rules[index].selector_verdict(self.labels)
    }

    /// Whether some rule's selector is all that stands between the namespace and the rule.
    pub(crate) fn needs_labels(&self) -> bool {
        self.names.as_ref().is_some_and(|n| n.needs_labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_labels_are_slices_of_the_host() {
        assert_eq!(trailing_labels("a.b.c", 0), "");
        assert_eq!(trailing_labels("a.b.c", 1), "c");
        assert_eq!(trailing_labels("a.b.c", 2), "b.c");
        assert_eq!(trailing_labels("a.b.c", 3), "a.b.c");
    }

    #[test]
    fn candidates_cover_exact_hosts_and_globs_by_suffix() {
        let patterns: Vec<SchemelessUrl> = [
            "quay.io",
            "*.dkr.ecr.*.amazonaws.com",
            "registry.example.com:5000/team/",
            "*.example.com",
            "reg[0-9].io",
            "[::1]:5000",
        ]
        .iter()
        .map(|p| SchemelessUrl::parse(p))
        .collect();
        let index = RuleIndex::build(patterns.iter().enumerate());
        let of = |target: &str| {
            let mut out = Vec::new();
            index.candidates(&SchemelessUrl::parse(target), &mut out);
            out.sort_unstable();
            out
        };
        // quay.io is exact; reg[0-9].io has the same length and last label.
        assert_eq!(of("quay.io/org/app"), [0, 4]);
        assert_eq!(of("1.dkr.ecr.eu-west-1.amazonaws.com/app"), [1]);
        assert_eq!(
            of("1.dkr.ecr.eu-west-1.amazonaws.org/app"),
            Vec::<usize>::new()
        );
        // Port and path are the full match's to check; the host alone finds the rule, and
        // the glob of the same length and suffix is a candidate too.
        assert_eq!(of("registry.example.com/x"), [2, 3]);
        assert_eq!(of("a.example.com/x"), [3]);
        assert_eq!(of("reg1.io/x"), [4]);
        assert_eq!(of("[::1]:5000/x"), [5]);
        assert_eq!(of("docker.io/library/nginx"), [4]);
        assert_eq!(of("docker.example.org/nginx"), Vec::<usize>::new());
    }

    #[test]
    fn the_index_never_changes_what_matches() {
        let patterns: Vec<SchemelessUrl> = [
            "quay.io",
            "quay.io:443",
            "*.io",
            "*",
            "*.*",
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "registry.example.com:5000/team/",
            "*.example.com/a",
            "reg[0-9].io",
            "[::1]:5000",
            "localhost:5000",
            "ghcr.io/acme/",
        ]
        .iter()
        .map(|p| SchemelessUrl::parse(p))
        .collect();
        let index = RuleIndex::build(patterns.iter().enumerate());
        for target in [
            "quay.io/org/app",
            "quay.io:443/org/app",
            "docker.io/library/nginx",
            "nginx",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
            "1.dkr.ecr.us-east-1.amazonaws.com/app",
            "registry.example.com:5000/team/x",
            "registry.example.com/team/x",
            "a.example.com/a/b",
            "reg7.io/x",
            "[::1]:5000/x",
            "localhost:5000/dev",
            "ghcr.io/acme/shop",
            "ghcr.io/other",
        ] {
            let target = SchemelessUrl::parse(target);
            let brute: Vec<usize> = (0..patterns.len())
                .filter(|&i| patterns[i].matches(&target))
                .collect();
            let mut indexed = Vec::new();
            index.candidates(&target, &mut indexed);
            indexed.sort_unstable();
            indexed.dedup();
            indexed.retain(|&i| patterns[i].matches(&target));
            assert_eq!(indexed, brute, "{target:?}");
        }
    }
}
