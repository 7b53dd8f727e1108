//! Knobs: injected latency, errors and dropped connections for matching requests, and
//! the request log.

use std::time::{Duration, SystemTime};

/// Which requests a fault applies to. Every field left `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub method: Option<String>,
    /// Plural resource: "secrets", "namespaces", "events", ...
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Some(true): only watch requests; Some(false): only non-watch requests.
    pub watch: Option<bool>,
}

impl Match {
    pub fn any() -> Self {
        Self::default()
    }
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    pub fn matches(&self, r: &LoggedRequest) -> bool {
        self.method.as_deref().is_none_or(|m| m == r.method)
            && self
                .resource
                .as_deref()
                .is_none_or(|x| Some(x) == r.resource.as_deref())
            && self
                .namespace
                .as_deref()
                .is_none_or(|x| Some(x) == r.namespace.as_deref())
            && self
                .name
                .as_deref()
                .is_none_or(|x| Some(x) == r.name.as_deref())
            && self.watch.is_none_or(|w| w == r.watch)
    }
}

/// What happens to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer late (added to any other fault).
    Latency(Duration),
    /// 500 InternalError Status.
    InternalError,
    /// 429 TooManyRequests Status with `Retry-After: <secs>`. Note: kube's default client
    /// retries 429/503/504 (up to 15 times, honouring Retry-After), so a bounded number of
    /// these is invisible to callers except in the request log.
    TooManyRequests { retry_after_secs: u64 },
    /// 503 ServiceUnavailable Status (also retried by kube's default client).
    ServiceUnavailable,
    /// 403 Forbidden Status as RBAC words it, for the given user.
    Forbidden { user: String },
    /// Close the TCP connection without answering.
    Drop,
}

impl Fault {
    pub fn forbidden() -> Self {
        Fault::Forbidden {
            user: "system:serviceaccount:pullsecret-injector:pullsecret-injector".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: u64,
    pub when: Match,
    pub fault: Fault,
    /// None: until cleared.
    pub remaining: Option<u32>,
}

/// A request as the fake received it (logged when it starts; a watch is logged once).
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// "" for the core group.
    pub group: Option<String>,
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub watch: bool,
    pub at: SystemTime,
    /// Order of arrival.
    pub seq: u64,
    /// The HTTP status answered (None while pending, or for a dropped connection).
    pub status: Option<u16>,
}

impl LoggedRequest {
    /// A resource request that is not a watch (get, list, create, update, patch, delete).
    pub fn is_api_call(&self) -> bool {
        self.resource.is_some() && !self.watch
    }
}

#[derive(Default)]
pub(crate) struct Faults {
    pub rules: Vec<Rule>,
    pub next_id: u64,
}

impl Faults {
    /// The total latency and the first error/drop fault for a request, consuming counts.
    pub fn take(&mut self, r: &LoggedRequest) -> (Duration, Option<Fault>) {
        let mut delay = Duration::ZERO;
        let mut fault = None;
        for rule in self.rules.iter_mut() {
            if rule.remaining == Some(0) || !rule.when.matches(r) {
                continue;
            }
            match &rule.fault {
                Fault::Latency(d) => delay += *d,
                other => {
                    if fault.is_some() {
                        continue;
                    }
                    fault = Some(other.clone());
                }
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
        }
        self.rules.retain(|r| r.remaining != Some(0));
        (delay, fault)
    }
}
