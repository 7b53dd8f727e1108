//! Label selectors (k8s.io/apimachinery/pkg/labels syntax: `=`, `==`, `!=`, `in`, `notin`,
//! `key`, `!key`, `>`, `<`) and field selectors (`=`, `==`, `!=` on the fields a resource
//! supports).

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

/// Splits at commas outside parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!(
                    "unable to parse requirement: found '', expected: identifier in {s:?}"
                ));
            }
            reqs.push(Self::parse_requirement(part)?);
        }
        Ok(Self(reqs))
    }

    fn parse_requirement(part: &str) -> Result<(String, LabelOp), String> {
        let bad = |why: &str| format!("unable to parse requirement: {why}: {part:?}");
        if let Some(key) = part.strip_prefix('!') {
            let key = key.trim();
            if !valid_key(key) {
                return Err(bad("invalid label key"));
            }
            return Ok((key.to_string(), LabelOp::NotExists));
        }
        let key_end = part
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>' | '('))
            .unwrap_or(part.len());
        let key = &part[..key_end];
        if !valid_key(key) {
            return Err(bad("invalid label key"));
        }
        let rest = part[key_end..].trim_start();
        let op = if rest.is_empty() {
            LabelOp::Exists
        } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            let v = v.trim();
            if !valid_value(v) {
                return Err(bad("invalid label value"));
            }
            LabelOp::Eq(v.to_string())
        } else if let Some(v) = rest.strip_prefix("!=") {
            let v = v.trim();
            if !valid_value(v) {
                return Err(bad("invalid label value"));
            }
            LabelOp::NotEq(v.to_string())
        } else if let Some(v) = rest.strip_prefix('>') {
            LabelOp::Gt(
                v.trim()
                    .parse()
                    .map_err(|_| bad("for 'Gt', 'Lt' operators, exactly one value is required"))?,
            )
        } else if let Some(v) = rest.strip_prefix('<') {
            LabelOp::Lt(
                v.trim()
                    .parse()
                    .map_err(|_| bad("for 'Gt', 'Lt' operators, exactly one value is required"))?,
            )
        } else {
            let (is_in, after) = if let Some(a) = rest.strip_prefix("notin") {
                (false, a)
            } else if let Some(a) = rest.strip_prefix("in") {
                (true, a)
            } else {
                return Err(bad("found unexpected operator"));
            };
            let after = after.trim();
            let inner = after
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(|| bad("expected a parenthesised set of values"))?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() && is_in {
                return Err(bad(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            if values.iter().any(|v| !valid_value(v)) {
                return Err(bad("invalid label value"));
            }
            if is_in {
                LabelOp::In(values)
            } else {
                LabelOp::NotIn(values)
            }
        };
        Ok((key.to_string(), op))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(key, op)| {
            let v = labels.get(key);
            match op {
                LabelOp::Eq(want) => v == Some(want),
                LabelOp::NotEq(want) => v != Some(want),
                LabelOp::In(set) => v.is_some_and(|v| set.contains(v)),
                LabelOp::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                LabelOp::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        })
    }
}

/// The labels of a stored object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Unescapes `\,` `\=` `\\` (fields.EscapeValue's inverse).
fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    /// Parses and checks every field against `supported` (the resource's field labels);
    /// an unknown one is the apiserver's `field label not supported: X`.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in s.split(',') {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), eq, unescape(value.trim())));
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = field_value(obj, field);
            (got == *want) == *eq
        })
    }
}

/// The value of a field label on an object: missing fields are "", booleans "true"/"false".
/// Core Events' `source` is `source.component` (pkg/registry/core/event/strategy.go).
fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let pointer = format!("/{}", path.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}
