//! The policy document (`policy.yaml`): parsed, validated, compiled into a matcher.
//!
//! Parse (serde, unknown fields rejected), then validate every value collecting all problems
//! with their line and column, then compile: globs become matchers once and the rules are
//! indexed by registry host (src/rule_index.rs), so matching a Pod costs what the rules that
//! can match its images cost, not the length of the rule list.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_saphyr::Spanned;
use thiserror::Error;

use crate::glob::Glob;
use crate::keyring;
use crate::reference::{DOCKER_HUB_API_HOSTS, ImageRef};

pub(crate) use crate::rule_index::NamespaceView;
use crate::rule_index::{NamespaceVerdicts, RuleIndex};

mod tokens;
pub(crate) use tokens::{TokenProvider, TokenSource};

/// One problem in a policy document, located for `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct PolicyProblem {
    pub(crate) origin: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

/// Every problem found in a document (at least one).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError(pub Vec<PolicyProblem>);

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    /// Registry patterns as written (kubelet matchImages syntax).
    pub(crate) registries: Vec<String>,
    /// Secret name in the source namespace.
    pub(crate) secret: String,
    /// Which namespaces may receive the secret; `None` = all that are not excluded.
    namespaces: Option<NamespaceFilter>,
    /// `registries`, parsed once for matching.
    patterns: Vec<keyring::SchemelessUrl>,
    /// `serviceAccounts`: ServiceAccount names (or `*`) that also list the secret in
    /// their `imagePullSecrets`; empty = the rule acts on Pods only.
    pub(crate) service_accounts: Vec<String>,
}

/// Whether a rule may act in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamespaceVerdict {
    Applies,
    Excluded,
    /// The rule has a label selector and the namespace's labels are not known.
    LabelsUnknown,
}

impl Rule {
    /// Does any registry pattern match `lookup_target` (`registry/repository`) the way the
    /// kubelet's keyring would?
    pub(crate) fn matches_target(&self, lookup_target: &str) -> bool {
        self.matches_parsed_target(&keyring::SchemelessUrl::parse(lookup_target))
    }

    /// [`Rule::matches_target`] for a target parsed once and checked against many rules.
    pub(crate) fn matches_parsed_target(&self, target: &keyring::SchemelessUrl) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(target))
    }

    /// Whether the rule's namespace filters admit `namespace`.
    pub(crate) fn namespace_verdict(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> NamespaceVerdict {
        match &self.namespaces {
            None => NamespaceVerdict::Applies,
            Some(filter) => filter.verdict(namespace, labels),
        }
    }

    /// Why the rule's namespace filters keep it out of `namespace`, in words (`None` when the
    /// rule applies there); the same decision as [`Rule::namespace_verdict`].
    pub(crate) fn why_not_in(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<String> {
        let filter = self.namespaces.as_ref()?;
        filter
            .why_not(namespace, labels)
            .map(|reason| reason.describe(namespace, labels))
    }

    /// Whether the rule keeps its secret listed on the ServiceAccount `name`.
    pub(crate) fn names_service_account(&self, name: &str) -> bool {
        self.service_accounts
            .iter()
            .any(|sa| sa == SERVICE_ACCOUNTS_ALL || sa == name)
    }

    /// Whether the rule has a label selector (needs namespace labels to decide).
    pub(crate) fn has_selector(&self) -> bool {
        self.namespaces
            .as_ref()
            .is_some_and(|f| f.selector.is_some())
    }

    pub(crate) fn has_namespace_filter(&self) -> bool {
        self.namespaces.is_some()
    }

    /// The name part of the namespace filter: include and exclude globs.
    pub(crate) fn name_admits(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|f| f.name_admits(namespace))
    }

    /// The label part of the namespace filter, for a namespace its name admits.
    pub(crate) fn selector_verdict(
        &self,
        labels: Option<&BTreeMap<String, String>>,
    ) -> NamespaceVerdict {
        match &self.namespaces {
            None => NamespaceVerdict::Applies,
            Some(filter) => filter.selector_verdict(labels),
        }
    }
}

/// `serviceAccounts: ["*"]`: every ServiceAccount of the namespace.
pub(crate) const SERVICE_ACCOUNTS_ALL: &str = "*";

/// A validated, compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) source_namespace: String,
    pub(crate) rules: Vec<Rule>,
    /// `tokenSources`: Secrets in the source namespace that `serve` mints itself.
    pub(crate) token_sources: Vec<TokenSource>,
    /// `excludeNamespaces`, compiled.
    exclude_namespaces: Vec<Glob>,
    /// Valid but probably not what was meant (e.g. a pattern on a Docker Hub API host).
    pub(crate) warnings: Vec<PolicyProblem>,
    /// `rules` by registry host: what an image is checked against.
    index: RuleIndex,
    /// Namespace filters per namespace, cached for this policy's lifetime.
    verdicts: NamespaceVerdicts,
}

impl Policy {
    /// Parses, validates and compiles `text`; `origin` names the file (or ConfigMap) in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let located = |err: serde_saphyr::Error| {
            let (line, column) = err
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((1, 1));
            let rendered = err.without_snippet().to_string();
            // The plain rendering ends with " at line L, column C"; the location is ours to print.
            let message = match rendered.rsplit_once(" at line ") {
                Some((message, _)) => message.to_string(),
                None => rendered,
            };
            PolicyError(vec![PolicyProblem {
                origin: origin.to_string(),
                line,
                column,
                message,
            }])
        };
        // First pass over the bare tree: every unknown field at once (serde stops at the first).
        let tree: Node = serde_saphyr::from_str(text).map_err(located)?;
        let mut problems = Problems {
            origin,
            found: Vec::new(),
            warnings: Vec::new(),
        };
        check_fields(&tree, Schema::Root, &mut problems);
        if !problems.found.is_empty() {
            return Err(PolicyError(problems.found));
        }
        let raw: RawPolicy = serde_saphyr::from_str(text).map_err(located)?;
        let mut policy = compile(raw, &mut problems);
        if problems.found.is_empty() {
            policy.warnings = problems.warnings;
            Ok(policy)
        } else {
            problems.found.sort_by_key(|p| (p.line, p.column));
            Err(PolicyError(problems.found))
        }
    }

    /// Every secret name the policy can hand out (what the cluster side watches).
    pub fn secret_names(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .map(|r| r.secret.clone())
            .chain(self.token_sources.iter().map(|t| t.secret.clone()))
            .collect()
    }

    /// The token source that fills the Secret `name`, if any.
    pub(crate) fn token_source(&self, name: &str) -> Option<&TokenSource> {
        self.token_sources.iter().find(|t| t.secret == name)
    }

    /// Why `namespace` is excluded from injection altogether, in words; `None` when it is not.
    pub(crate) fn why_excluded(&self, namespace: &str, webhook_namespace: &str) -> Option<String> {
        if namespace == webhook_namespace {
            return Some(format!(
                "namespace {namespace:?} is the webhook's own namespace, which is never injected"
            ));
        }
        self.exclude_namespaces
            .iter()
            .find(|g| g.matches(namespace))
            .map(|g| {
                format!(
                    "namespace {namespace:?} matches excludeNamespaces pattern {:?}",
                    g.as_str()
                )
            })
    }

    /// Whether `namespace` is excluded from injection altogether.
    pub(crate) fn namespace_excluded(&self, namespace: &str, webhook_namespace: &str) -> bool {
        namespace == webhook_namespace
            || self.exclude_namespaces.iter().any(|g| g.matches(namespace))
    }

    /// Whether `rule` gives `namespace` its secret: the namespace is not excluded and the
    /// rule's filters admit it. `None` when that depends on labels that are not known.
    pub(crate) fn rule_applies(
        &self,
        rule: &Rule,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
        webhook_namespace: &str,
    ) -> Option<bool> {
        if self.namespace_excluded(namespace, webhook_namespace) {
            return Some(false);
        }
        match rule.namespace_verdict(namespace, labels) {
            NamespaceVerdict::Applies => Some(true),
            NamespaceVerdict::Excluded => Some(false),
            NamespaceVerdict::LabelsUnknown => None,
        }
    }

    /// Rules whose registries match `lookup_target` and whose namespace filters admit the
    /// namespace, in rule order. A rule with a selector is not applied when `labels` is `None`.
    pub(crate) fn matching_rules<'a>(
        &'a self,
        lookup_target: &str,
        namespace: &str,
        labels: Option<&'a BTreeMap<String, String>>,
    ) -> Vec<&'a Rule> {
        let view = self.namespace_view(namespace, labels);
        let mut matched = Vec::new();
        self.rules_matching(&keyring::SchemelessUrl::parse(lookup_target), &mut matched);
        matched
            .into_iter()
            .filter(|&i| view.verdict(i) == NamespaceVerdict::Applies)
            .map(|i| &self.rules[i])
            .collect()
    }

    /// Replaces `out` with the indices of the rules whose registries match `target`, in rule
    /// order. Costs what the rules that share the target's host cost, not the whole list.
    pub(crate) fn rules_matching(&self, target: &keyring::SchemelessUrl, out: &mut Vec<usize>) {
        out.clear();
        self.index.candidates(target, out);
        out.sort_unstable();
        out.dedup();
        out.retain(|&i| self.rules[i].matches_parsed_target(target));
    }

    /// How the rules see `namespace` (name filters cached per namespace for this policy).
    pub(crate) fn namespace_view<'p>(
        &'p self,
        namespace: &str,
        labels: Option<&'p BTreeMap<String, String>>,
    ) -> NamespaceView<'p> {
        self.verdicts.view(&self.rules, namespace, labels)
    }

    /// Whether a rule's label selector is all that stands between `namespace` and the rule,
    /// so its labels are worth waiting for.
    pub(crate) fn needs_labels(&self, namespace: &str, webhook_namespace: &str) -> bool {
        !self.namespace_excluded(namespace, webhook_namespace)
            && self.namespace_view(namespace, None).needs_labels()
    }
}

// ---------------------------------------------------------------------------------------------
// Parse: the document as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    source_namespace: Spanned<String>,
    #[serde(default)]
    exclude_namespaces: Vec<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    token_sources: Vec<Spanned<tokens::RawTokenSource>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    name: Spanned<String>,
    registries: Spanned<Vec<Spanned<String>>>,
    secret: Spanned<String>,
    #[serde(default)]
    namespaces: Option<RawNamespaces>,
    #[serde(default)]
    service_accounts: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNamespaces {
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    selector: Option<RawSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Spanned<RawExpression>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExpression {
    key: Spanned<String>,
    operator: Spanned<String>,
    #[serde(default)]
    values: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The document as a bare tree with locations, to find every unknown field in one pass.

#[derive(Debug)]
struct Node(Spanned<NodeKind>);

#[derive(Debug)]
enum NodeKind {
    Map(Vec<(Spanned<String>, Node)>),
    Seq(Vec<Node>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Node(Spanned::<NodeKind>::deserialize(d)?))
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, SeqAccess, Visitor};
        struct Tree;
        impl<'de> Visitor<'de> for Tree {
            type Value = NodeKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value::<Node>()?));
                }
                Ok(NodeKind::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(NodeKind::Seq(items))
            }
            fn visit_str<E: Error>(self, _: &str) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_i64<E: Error>(self, _: i64) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_u64<E: Error>(self, _: u64) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_f64<E: Error>(self, _: f64) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_unit<E: Error>(self) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
            fn visit_none<E: Error>(self) -> Result<NodeKind, E> {
                Ok(NodeKind::Scalar)
            }
        }
        d.deserialize_any(Tree)
    }
}

/// Which mapping of the policy a node is.
#[derive(Clone, Copy)]
enum Schema {
    Root,
    Rule,
    Namespaces,
    Selector,
    Expression,
    TokenSource,
    Ecr,
    Google,
    Azure,
}

impl Schema {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Schema::Root => &[
                "sourceNamespace",
                "excludeNamespaces",
                "rules",
                "tokenSources",
            ],
            Schema::Rule => &[
                "name",
                "registries",
                "secret",
                "namespaces",
                "serviceAccounts",
            ],
            Schema::Namespaces => &["include", "exclude", "selector"],
            Schema::Selector => &["matchLabels", "matchExpressions"],
            Schema::Expression => &["key", "operator", "values"],
            Schema::TokenSource => tokens::SOURCE_FIELDS,
            Schema::Ecr => tokens::ECR_FIELDS,
            Schema::Google => tokens::GOOGLE_FIELDS,
            Schema::Azure => tokens::AZURE_FIELDS,
        }
    }

    /// The schema of the value under `field`, when it is one of ours.
    fn child(self, field: &str) -> Option<Schema> {
        match (self, field) {
            (Schema::Root, "rules") => Some(Schema::Rule),
            (Schema::Rule, "namespaces") => Some(Schema::Namespaces),
            (Schema::Namespaces, "selector") => Some(Schema::Selector),
            (Schema::Selector, "matchExpressions") => Some(Schema::Expression),
            (Schema::Root, "tokenSources") => Some(Schema::TokenSource),
            (Schema::TokenSource, "ecr") => Some(Schema::Ecr),
            (Schema::TokenSource, "google") => Some(Schema::Google),
            (Schema::TokenSource, "azure") => Some(Schema::Azure),
            _ => None,
        }
    }
}

/// Reports every unknown field; shapes and types are left to the typed parse.
fn check_fields(node: &Node, schema: Schema, problems: &mut Problems<'_>) {
    match &node.0.value {
        NodeKind::Seq(items) => items
            .iter()
            .for_each(|item| check_fields(item, schema, problems)),
        NodeKind::Map(entries) => {
            for (key, value) in entries {
                if !schema.fields().contains(&key.value.as_str()) {
                    let hint = nearest(&key.value, schema.fields())
                        .map(|name| format!(" (did you mean `{name}`?)"))
                        .unwrap_or_default();
                    problems.at(
                        key,
                        format!(
                            "unknown field `{}`{hint}, expected one of {}",
                            key.value,
                            schema.fields().join(", ")
                        ),
                    );
                } else if let Some(child) = schema.child(&key.value) {
                    check_fields(value, child, problems);
                }
            }
        }
        NodeKind::Scalar => {}
    }
}

/// The known field closest to a misspelled one: at most one edit per three characters
/// (`registry` for `registries`, `namespace` for `namespaces`), so a suggestion is a likely
/// slip and not a guess.
fn nearest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    let folded = field.to_ascii_lowercase();
    known
        .iter()
        .map(|name| (edit_distance(&folded, &name.to_ascii_lowercase()), *name))
        .filter(|(distance, _)| *distance <= field.len().div_ceil(3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Validate and compile.

struct Problems<'o> {
    origin: &'o str,
    found: Vec<PolicyProblem>,
    warnings: Vec<PolicyProblem>,
}

impl Problems<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        let problem = self.locate(spanned, message);
        self.found.push(problem);
    }

    fn warn<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        let problem = self.locate(spanned, message);
        self.warnings.push(problem);
    }

    fn locate<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> PolicyProblem {
        PolicyProblem {
            origin: self.origin.to_string(),
            line: spanned.referenced.line() as usize,
            column: spanned.referenced.column() as usize,
            message: message.into(),
        }
    }
}

fn compile(raw: RawPolicy, problems: &mut Problems<'_>) -> Policy {
    if let Err(why) = dns_label(&raw.source_namespace.value) {
        problems.at(
            &raw.source_namespace,
            format!(
                "sourceNamespace {:?} is not a valid namespace name: {why}",
                raw.source_namespace.value
            ),
        );
    }
    let exclude_namespaces =
        compile_namespace_globs(&raw.exclude_namespaces, "excludeNamespaces", problems);

    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for spanned_rule in raw.rules {
        let rule = spanned_rule.value;
        let name = &rule.name;
        if let Err(why) = rule_name(&name.value) {
            problems.at(name, format!("rule name {:?} {why}", name.value));
        }
        let here = (
            name.referenced.line() as usize,
            name.referenced.column() as usize,
        );
        if let Some((line, column)) = seen.get(&name.value) {
            problems.at(
                name,
                format!(
                    "duplicate rule name {:?} (first defined at line {line}, column {column})",
                    name.value
                ),
            );
        } else {
            seen.insert(name.value.clone(), here);
        }

        if rule.registries.value.is_empty() {
            problems.at(
                &rule.registries,
                format!(
                    "rule {:?}: registries is empty; list at least one pattern",
                    name.value
                ),
            );
        }
        for pattern in &rule.registries.value {
            match check_registry_pattern(&pattern.value) {
                Ok(None) => {}
                Ok(Some(warning)) => problems.warn(
                    pattern,
                    format!(
                        "rule {:?}: registry pattern {:?}: {warning}",
                        name.value, pattern.value
                    ),
                ),
                Err(why) => problems.at(
                    pattern,
                    format!(
                        "rule {:?}: registry pattern {:?}: {why}",
                        name.value, pattern.value
                    ),
                ),
            }
        }

        if let Err(why) = dns_subdomain(&rule.secret.value) {
            problems.at(
                &rule.secret,
                format!(
                    "rule {:?}: secret {:?} is not a valid Secret name: {why}",
                    name.value, rule.secret.value
                ),
            );
        }

        let service_accounts =
            compile_service_accounts(rule.service_accounts, &name.value, problems);
        let namespaces = rule.namespaces.map(|ns| NamespaceFilter {
            include: compile_namespace_globs(&ns.include, "namespaces.include", problems),
            exclude: compile_namespace_globs(&ns.exclude, "namespaces.exclude", problems),
            selector: ns.selector.and_then(|s| compile_selector(s, problems)),
        });

        let registries: Vec<String> = rule.registries.value.into_iter().map(|p| p.value).collect();
        let patterns = registries
            .iter()
            .map(|p| keyring::SchemelessUrl::parse(p))
            .collect();
        rules.push(Rule {
            name: rule.name.value,
            registries,
            secret: rule.secret.value,
            namespaces,
            patterns,
            service_accounts,
        });
    }

    let index = RuleIndex::build(
        rules
            .iter()
            .enumerate()
            .flat_map(|(i, rule)| rule.patterns.iter().map(move |p| (i, p))),
    );
    let verdicts = NamespaceVerdicts::new(&rules);
    let token_sources = tokens::compile(raw.token_sources, problems);
    Policy {
        source_namespace: raw.source_namespace.value,
        rules,
        token_sources,
        exclude_namespaces,
        warnings: Vec::new(),
        index,
        verdicts,
    }
}

fn compile_namespace_globs(
    globs: &[Spanned<String>],
    field: &str,
    problems: &mut Problems<'_>,
) -> Vec<Glob> {
    let mut out = Vec::with_capacity(globs.len());
    for glob in globs {
        if glob.value.is_empty() {
            problems.at(glob, format!("{field}: empty namespace pattern"));
            continue;
        }
        if let Some(c) = glob
            .value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-*?[]^\\".contains(*c)))
        {
            problems.at(
                glob,
                format!(
                    "{field}: {:?} can never match a namespace name (character {c:?})",
                    glob.value
                ),
            );
            continue;
        }
        match Glob::compile(&glob.value) {
            Ok(g) => out.push(g),
            Err(why) => problems.at(glob, format!("{field}: bad glob {:?}: {why}", glob.value)),
        }
    }
    out
}

/// ServiceAccount names are DNS subdomains; `*` stands for all of them. Repeats are dropped.
fn compile_service_accounts(
    raw: Option<Spanned<Vec<Spanned<String>>>>,
    rule: &str,
    problems: &mut Problems<'_>,
) -> Vec<String> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    if raw.value.is_empty() {
        problems.at(
            &raw,
            format!(
                "rule {rule:?}: serviceAccounts is empty; list names (or \"*\") or leave the field out"
            ),
        );
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.value.len());
    for sa in raw.value {
        if sa.value != SERVICE_ACCOUNTS_ALL
            && let Err(why) = dns_subdomain(&sa.value)
        {
            problems.at(
                &sa,
                format!(
                    "rule {rule:?}: serviceAccounts: {:?} is not a valid ServiceAccount name: {why}",
                    sa.value
                ),
            );
            continue;
        }
        if !out.contains(&sa.value) {
            out.push(sa.value);
        }
    }
    out
}

fn compile_selector(raw: RawSelector, problems: &mut Problems<'_>) -> Option<Selector> {
    let mut expressions = Vec::with_capacity(raw.match_expressions.len());
    for spanned in raw.match_expressions {
        let expr = spanned.value;
        if expr.key.value.is_empty() {
            problems.at(&expr.key, "selector: matchExpressions key is empty");
        }
        let op = match expr.operator.value.as_str() {
            "In" | "NotIn" if expr.values.is_empty() => {
                problems.at(
                    &expr.operator,
                    format!(
                        "selector: operator {} needs a non-empty values list",
                        expr.operator.value
                    ),
                );
                continue;
            }
            "In" => Operator::In(expr.values.into_iter().collect()),
            "NotIn" => Operator::NotIn(expr.values.into_iter().collect()),
            "Exists" | "DoesNotExist" if !expr.values.is_empty() => {
                problems.at(
                    &expr.operator,
                    format!("selector: operator {} takes no values", expr.operator.value),
                );
                continue;
            }
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                problems.at(
                    &expr.operator,
                    format!(
                        "selector: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    ),
                );
                continue;
            }
        };
        expressions.push((expr.key.value, op));
    }
    if raw.match_labels.is_empty() && expressions.is_empty() {
        // An empty selector selects every namespace, as in Kubernetes.
        return None;
    }
    Some(Selector {
        match_labels: raw.match_labels,
        expressions,
    })
}

/// Rule names end up in the Pod annotation `rule=secret,...`, so they must not contain
/// the separators.
fn rule_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("may only contain letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// RFC 1123 label (namespace names, Service names).
pub(crate) fn dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    dns_part(name)
}

/// RFC 1123 subdomain (Secret names).
pub(crate) fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    name.split('.').try_for_each(|part| {
        if part.is_empty() {
            Err("it has an empty part between dots")
        } else {
            dns_part(part)
        }
    })
}

fn dns_part(part: &str) -> Result<(), &'static str> {
    if !part
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("use lowercase letters, digits, '-' and '.'");
    }
    if part.starts_with('-') || part.ends_with('-') {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

/// A registry pattern in kubelet matchImages syntax: `host[:port][/path]`, globs only in
/// host labels. Rejects what is malformed and what can never match a normalized image;
/// `Ok(Some(warning))` for a pattern that matches only images few people write.
fn check_registry_pattern(pattern: &str) -> Result<Option<String>, String> {
    if pattern.is_empty() {
        return Err("is empty".into());
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace".into());
    }
    if pattern.contains("://") {
        return Err(
            "has a scheme; patterns match image names, write it without \"https://\"".into(),
        );
    }
    if pattern.contains(['?', '#']) {
        return Err("'?' and '#' end a URL, so they cannot be part of a pattern".into());
    }
    let (host, path) = match pattern.find('/') {
        Some(i) => pattern.split_at(i),
        None => (pattern, ""),
    };
    if host.is_empty() {
        return Err("has no registry host".into());
    }
    // `[` opens an IPv6 literal only when what follows looks like one (hex digits and
    // colons up to `]`); otherwise it is a glob class such as `[a-c]reg.io`.
    let ipv6 = host.strip_prefix('[').filter(|rest| {
        let inside = rest.split(']').next().unwrap_or(rest);
        inside.contains(':')
            && inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
    });
    let hostname = if let Some(rest) = ipv6 {
        // IPv6 literal: one label, compared as a glob.
        let Some((_, port)) = rest.split_once(']') else {
            return Err("has an unclosed '[' in an IPv6 address".into());
        };
        check_port(port.strip_prefix(':').unwrap_or(port), port.is_empty())?;
        ""
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => {
                check_port(port, false)?;
                name
            }
            None => host,
        }
    };
    for label in hostname.split('.').filter(|_| !hostname.is_empty()) {
        if label.is_empty() {
            return Err("has an empty host label, which never matches".into());
        }
        Glob::compile(label).map_err(|why| format!("bad glob in host label {label:?}: {why}"))?;
    }
    if hostname.is_empty() && ipv6.is_none() {
        return Err("has no registry host".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository paths are lowercase, so {c:?} never matches"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(*c)))
    {
        return Err(format!(
            "{c:?} in the path never matches (globs work only in the host; the path is a plain prefix)"
        ));
    }
    docker_hub_spelling(pattern, host, path)
}

/// Patterns that are well formed but spell Docker Hub, or a Docker Hub repository, in a way
/// normalized images never carry. The normalization is the image parser's own: a pattern's
/// host is a registry exactly when `host/x` parses to an image on that registry.
fn docker_hub_spelling(pattern: &str, host: &str, path: &str) -> Result<Option<String>, String> {
    if DOCKER_HUB_API_HOSTS.contains(&host) {
        return Ok(Some(format!(
            "matches only images written with the host {host}; Docker Hub images are normalized to docker.io, so write \"docker.io{path}\" to match them"
        )));
    }
    let Ok(probe) = ImageRef::parse(&format!("{host}/x")) else {
        // Globs and other characters no image name has: not a Docker Hub spelling.
        return Ok(None);
    };
    if probe.registry == host {
        return Ok(None);
    }
    let suggestion = if host.contains(['.', ':']) {
        // A legacy spelling of the registry itself (`index.docker.io`).
        format!("{}{path}", probe.registry)
    } else {
        let trimmed = pattern.trim_end_matches('/');
        let slash = if trimmed.len() < pattern.len() {
            "/"
        } else {
            ""
        };
        match ImageRef::parse(trimmed) {
            // `acme/` is the prefix of the `acme` organisation, not the official image `acme`.
            Ok(_) if !slash.is_empty() && !trimmed.contains('/') => {
                format!("{}/{pattern}", probe.registry)
            }
            Ok(image) => format!("{}{slash}", image.lookup_target()),
            Err(_) => format!("{}/{pattern}", probe.registry),
        }
    };
    let why = if host.contains(['.', ':']) {
        format!("images on {host} are normalized to {}", probe.registry)
    } else {
        format!(
            "{host:?} is not a registry host (a first component without '.', ':' or \"localhost\" is a Docker Hub repository), so no normalized image starts with it"
        )
    };
    Err(format!("never matches: {why}; write {suggestion:?}"))
}

fn check_port(port: &str, absent_ok: bool) -> Result<(), String> {
    if port.is_empty() && absent_ok {
        return Ok(());
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Compiled matchers.

#[derive(Debug, Clone)]
struct NamespaceFilter {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
    selector: Option<Selector>,
}

/// Which condition of a rule's `namespaces` keeps it out of a namespace. Borrowed, so the
/// admission path decides without allocating; words only when `explain` asks.
enum NotApplied<'a> {
    IncludeMiss(&'a [Glob]),
    ExcludeHit(&'a Glob),
    SelectorMiss(&'a Selector),
    LabelsUnknown,
}

impl NamespaceFilter {
    fn verdict(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> NamespaceVerdict {
        if !self.name_admits(namespace) {
            return NamespaceVerdict::Excluded;
        }
        self.selector_verdict(labels)
    }

    fn name_admits(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| g.matches(namespace)))
            && !self.exclude.iter().any(|g| g.matches(namespace))
    }

    fn selector_verdict(&self, labels: Option<&BTreeMap<String, String>>) -> NamespaceVerdict {
        match (&self.selector, labels) {
            (None, _) => NamespaceVerdict::Applies,
            (Some(_), None) => NamespaceVerdict::LabelsUnknown,
            (Some(selector), Some(labels)) if selector.matches(labels) => NamespaceVerdict::Applies,
            (Some(_), Some(_)) => NamespaceVerdict::Excluded,
        }
    }

    /// Which condition [`NamespaceFilter::verdict`] fails on, for `explain`: the same checks
    /// in the same order (include, exclude, selector), naming the pattern or selector.
    fn why_not(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<NotApplied<'_>> {
        if !self.include.is_empty() && !self.include.iter().any(|g| g.matches(namespace)) {
            return Some(NotApplied::IncludeMiss(&self.include));
        }
        if let Some(hit) = self.exclude.iter().find(|g| g.matches(namespace)) {
            return Some(NotApplied::ExcludeHit(hit));
        }
        match (self.selector_verdict(labels), &self.selector) {
            (NamespaceVerdict::Applies, _) => None,
            (NamespaceVerdict::LabelsUnknown, _) => Some(NotApplied::LabelsUnknown),
            (NamespaceVerdict::Excluded, Some(selector)) => {
                Some(NotApplied::SelectorMiss(selector))
            }
            (NamespaceVerdict::Excluded, None) => None,
        }
    }
}

impl NotApplied<'_> {
    fn describe(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> String {
        let quoted = |globs: &mut dyn Iterator<Item = &Glob>| {
            globs
                .map(|g| format!("{:?}", g.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            NotApplied::IncludeMiss(include) => format!(
                "namespace {namespace:?} matches none of namespaces.include [{}]",
                quoted(&mut include.iter())
            ),
            NotApplied::ExcludeHit(glob) => format!(
                "namespace {namespace:?} matches namespaces.exclude pattern {:?}",
                glob.as_str()
            ),
            NotApplied::LabelsUnknown => format!(
                "the selector needs the labels of namespace {namespace:?}, which are not known"
            ),
            NotApplied::SelectorMiss(selector) => {
                let labels = labels.cloned().unwrap_or_default();
                let given: Vec<String> = labels
                    .iter()
                    // The apiserver sets this one on every namespace; it is not news.
                    .filter(|(k, _)| k.as_str() != crate::state::NAME_LABEL)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(
                    "the selector needs namespace labels {} (namespace {namespace:?} has {})",
                    selector.unmet(&labels).join(", "),
                    if given.is_empty() {
                        "none".to_string()
                    } else {
                        given.join(",")
                    }
                )
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Selector {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<(String, Operator)>,
}

#[derive(Debug, Clone)]
enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// The requirements `labels` do not meet, in kubectl's selector syntax.
    fn unmet(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let list = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
        let mut out: Vec<String> = self
            .match_labels
            .iter()
            .filter(|(k, v)| labels.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (key, op) in &self.expressions {
            let value = labels.get(key);
            let (met, text) = match op {
                Operator::In(values) => (
                    value.is_some_and(|v| values.contains(v)),
                    format!("{key} in ({})", list(values)),
                ),
                Operator::NotIn(values) => (
                    value.is_none_or(|v| !values.contains(v)),
                    format!("{key} notin ({})", list(values)),
                ),
                Operator::Exists => (value.is_some(), key.clone()),
                Operator::DoesNotExist => (value.is_none(), format!("!{key}")),
            };
            if !met {
                out.push(text);
            }
        }
        out
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(key, op)| {
                let value = labels.get(key);
                match op {
                    Operator::In(values) => value.is_some_and(|v| values.contains(v)),
                    // As in Kubernetes: NotIn also matches when the label is absent.
                    Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Policy::parse(text, "policy.yaml") {
            Ok(_) => Vec::new(),
            Err(PolicyError(found)) => found.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = "\
sourceNamespace: registry-credentials
excludeNamespaces: [kube-system, \"kube-*\"]
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-deploy-token
    namespaces:
      include: [\"team-*\"]
      exclude: [team-sandbox]
      selector:
        matchLabels: {registry-access: gitlab}
        matchExpressions:
          - {key: tier, operator: NotIn, values: [scratch]}
  - name: ecr
    registries: [\"*.dkr.ecr.*.amazonaws.com\"]
    secret: ecr-pull
";

    #[test]
    fn a_good_policy_compiles() {
        let policy = Policy::parse(GOOD, "policy.yaml").unwrap();
        assert_eq!(policy.source_namespace, "registry-credentials");
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(
            policy.rules[0].registries,
            vec!["registry.gitlab.com/acme/"]
        );
        assert_eq!(
            policy.secret_names().into_iter().collect::<Vec<_>>(),
            vec!["ecr-pull", "gitlab-deploy-token"]
        );
    }

    #[test]
    fn excluded_namespaces_include_the_webhooks_own() {
        let policy = Policy::parse(GOOD, "policy.yaml").unwrap();
        assert!(policy.namespace_excluded("kube-system", "psi"));
        assert!(policy.namespace_excluded("kube-node-lease", "psi"));
        assert!(policy.namespace_excluded("psi", "psi"));
        assert!(!policy.namespace_excluded("team-a", "psi"));
    }

    #[test]
    fn namespace_filters_and_selector() {
        let policy = Policy::parse(GOOD, "policy.yaml").unwrap();
        let gitlab = &policy.rules[0];
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = labels(&[("registry-access", "gitlab")]);
        assert_eq!(
            gitlab.namespace_verdict("team-a", Some(&ok)),
            NamespaceVerdict::Applies
        );
        assert_eq!(
            gitlab.namespace_verdict("other", Some(&ok)),
            NamespaceVerdict::Excluded
        );
        assert_eq!(
            gitlab.namespace_verdict("team-sandbox", Some(&ok)),
            NamespaceVerdict::Excluded
        );
        assert_eq!(
            gitlab.namespace_verdict("team-a", None),
            NamespaceVerdict::LabelsUnknown
        );
        assert_eq!(
            gitlab.namespace_verdict("team-a", Some(&labels(&[]))),
            NamespaceVerdict::Excluded
        );
        let scratch = labels(&[("registry-access", "gitlab"), ("tier", "scratch")]);
        assert_eq!(
            gitlab.namespace_verdict("team-a", Some(&scratch)),
            NamespaceVerdict::Excluded
        );
        assert_eq!(
            policy.rules[1].namespace_verdict("anything", None),
            NamespaceVerdict::Applies
        );
    }

    #[test]
    fn unknown_field_is_located() {
        let text = "sourceNamespace: creds\nrules:\n  - name: a\n    registry: [\"quay.io\"]\n    secret: s\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("policy.yaml:4:5: unknown field `registry`"),
            "{found:?}"
        );
    }

    #[test]
    fn duplicate_rule_name_is_located() {
        let text = "sourceNamespace: creds\nrules:\n  - name: a\n    registries: [quay.io]\n    secret: s\n  - name: a\n    registries: [ghcr.io]\n    secret: t\n";
        assert_eq!(
            problems(text),
            vec![
                "policy.yaml:6:11: duplicate rule name \"a\" (first defined at line 3, column 11)"
            ]
        );
    }

    #[test]
    fn bad_glob_and_empty_registries_are_all_reported() {
        let text = "\
sourceNamespace: creds
rules:
  - name: a
    registries: []
    secret: s
  - name: b
    registries:
      - \"reg[.example.com\"
      - \"\"
      - \"https://quay.io\"
      - \"quay.io/Acme\"
      - \"quay.io/*\"
    secret: Not_A_Name
    namespaces:
      include: [\"team-[\"]
";
        let found = problems(text);
        assert_eq!(found.len(), 8, "{found:#?}");
        assert_eq!(
            found[0],
            "policy.yaml:4:17: rule \"a\": registries is empty; list at least one pattern"
        );
        assert!(
            found[1].starts_with(
                "policy.yaml:8:9: rule \"b\": registry pattern \"reg[.example.com\": bad glob"
            ),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with("policy.yaml:9:9: rule \"b\": registry pattern \"\": is empty")
        );
        assert!(found[3].starts_with("policy.yaml:10:9: ") && found[3].contains("scheme"));
        assert!(found[4].starts_with("policy.yaml:11:9: ") && found[4].contains("lowercase"));
        assert!(found[5].starts_with("policy.yaml:12:9: ") && found[5].contains("never matches"));
        assert!(found[6].starts_with("policy.yaml:13:13: rule \"b\": secret \"Not_A_Name\""));
        assert!(found[7].starts_with("policy.yaml:15:17: namespaces.include: bad glob"));
    }

    #[test]
    fn every_unknown_field_is_reported() {
        let text = "sourceNamespace: creds\nexcludeNamespace: [a]\nrules:\n  - name: a\n    registries: [quay.io]\n    secret: s\n    namespace: {include: [x]}\n  - name: b\n    registries: [quay.io]\n    secret: s\n    namespaces:\n      selector:\n        matchLabels: {anything: goes}\n        matchExpressions: [{key: k, operator: Exists, value: [x]}]\n";
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with("policy.yaml:2:1: unknown field `excludeNamespace`"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("policy.yaml:7:5: unknown field `namespace`"),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with("policy.yaml:14:55: unknown field `value`"),
            "{found:#?}"
        );
    }

    #[test]
    fn syntax_errors_and_missing_fields_are_located() {
        assert_eq!(problems("sourceNamespace: [\n").len(), 1);
        let found = problems("sourceNamespace: creds\nrules:\n  - name: a\n    secret: s\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("policy.yaml:")
                && found[0].ends_with("missing field `registries`"),
            "{found:?}"
        );
    }

    #[test]
    fn registry_patterns() {
        for ok in [
            "quay.io",
            "*.dkr.ecr.*.amazonaws.com",
            "localhost:5000/dev/",
            "[::1]:5000",
            "reg[0-9].io/a_b",
        ] {
            assert_eq!(check_registry_pattern(ok), Ok(None), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            ":5000",
            "reg:http",
            "quay.io/a b",
            "quay.io?x",
            "reg[].io",
            "/org",
        ] {
            assert!(check_registry_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::compile(p).unwrap();
        assert!(g("team-*").matches("team-a"));
        assert!(g("team-*").matches("team-"));
        assert!(!g("team-*").matches("teams"));
        assert!(g("*-prod").matches("a-b-prod"));
        assert!(g("t?am").matches("team"));
        assert!(g("[a-c]x").matches("bx"));
        assert!(!g("[^a-c]x").matches("bx"));
        assert!(g("*a*b*").matches("xxaxxbxx"));
        assert!(!g("*a*b").matches("xxaxxbxx"));
        assert!(Glob::compile("[").is_err());
        assert!(Glob::compile("a\\").is_err());
        assert!(Glob::compile("[]").is_err());
    }

    #[test]
    fn dns_names() {
        assert!(dns_subdomain("ecr-pull.v2").is_ok());
        assert!(dns_subdomain("Ecr").is_err());
        assert!(dns_subdomain("-x").is_err());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_subdomain(&"a".repeat(254)).is_err());
    }

    #[test]
    fn service_accounts_are_names_or_star() {
        let text = "\
sourceNamespace: creds
rules:
  - name: gitlab
    registries: [\"registry.gitlab.com/acme/\"]
    secret: gitlab-pull
    serviceAccounts: [default, builder, default]
  - name: all
    registries: [\"registry.example.com\"]
    secret: example-pull
    serviceAccounts: [\"*\"]
  - name: pods-only
    registries: [\"registry.example.org\"]
    secret: org-pull
";
        let policy = Policy::parse(text, "policy.yaml").unwrap();
        let [gitlab, all, pods_only] = &policy.rules[..] else {
            panic!("three rules");
        };
        assert_eq!(gitlab.service_accounts, vec!["default", "builder"]);
        assert!(gitlab.names_service_account("builder"));
        assert!(!gitlab.names_service_account("deployer"));
        assert!(all.names_service_account("anything"));
        assert!(pods_only.service_accounts.is_empty());
        assert!(!pods_only.names_service_account("default"));
    }

    #[test]
    fn bad_service_accounts_are_located() {
        let text = "\
sourceNamespace: creds
rules:
  - name: a
    registries: [\"registry.example.com\"]
    secret: a-pull
    serviceAccounts: [Builder]
  - name: b
    registries: [\"registry.example.com\"]
    secret: b-pull
    serviceAccounts: []
";
        assert_eq!(
            problems(text),
            vec![
                "policy.yaml:6:23: rule \"a\": serviceAccounts: \"Builder\" is not a valid ServiceAccount name: use lowercase letters, digits, '-' and '.'",
                "policy.yaml:10:22: rule \"b\": serviceAccounts is empty; list names (or \"*\") or leave the field out",
            ]
        );
    }

    #[test]
    fn a_rule_applies_unless_excluded_and_waits_for_unknown_labels() {
        let policy = Policy::parse(GOOD, "policy.yaml").unwrap();
        let gitlab = &policy.rules[0];
        let selected = BTreeMap::from([("registry-access".to_string(), "gitlab".to_string())]);
        assert_eq!(
            policy.rule_applies(gitlab, "team-a", Some(&selected), "psi"),
            Some(true)
        );
        assert_eq!(policy.rule_applies(gitlab, "team-a", None, "psi"), None);
        assert_eq!(
            policy.rule_applies(gitlab, "team-a", Some(&BTreeMap::new()), "psi"),
            Some(false)
        );
        assert_eq!(
            policy.rule_applies(&policy.rules[1], "kube-system", None, "psi"),
            Some(false)
        );
        assert_eq!(
            policy.rule_applies(&policy.rules[1], "psi", None, "psi"),
            Some(false)
        );
    }
}
