//! The state behind the fake: objects per (resource, namespace, name), one global
//! resourceVersion (like etcd's revision), a bounded log of change events (the watch
//! window), and the apiserver's create/update/patch/delete semantics over JSON objects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::selectors::{FieldSelector, LabelSelector, labels_of};
use super::status::{self, ApiError, FieldError};
use super::validation::{check_type, prepare, validate};

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespaces,
    Secrets,
    ConfigMaps,
    Pods,
    ServiceAccounts,
    /// core/v1 Events.
    Events,
    /// events.k8s.io/v1 Events: another version of the core Event storage.
    EventsV1,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Namespaces,
        Kind::Secrets,
        Kind::ConfigMaps,
        Kind::Pods,
        Kind::ServiceAccounts,
        Kind::Events,
        Kind::EventsV1,
    ];

    pub fn group(self) -> &'static str {
        match self {
            Kind::EventsV1 => "events.k8s.io",
            _ => "",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EventsV1 => "events.k8s.io/v1",
            _ => "v1",
        }
    }

    pub fn kind_name(self) -> &'static str {
        match self {
            Kind::Namespaces => "Namespace",
            Kind::Secrets => "Secret",
            Kind::ConfigMaps => "ConfigMap",
            Kind::Pods => "Pod",
            Kind::ServiceAccounts => "ServiceAccount",
            Kind::Events | Kind::EventsV1 => "Event",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespaces => "namespaces",
            Kind::Secrets => "secrets",
            Kind::ConfigMaps => "configmaps",
            Kind::Pods => "pods",
            Kind::ServiceAccounts => "serviceaccounts",
            Kind::Events | Kind::EventsV1 => "events",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespaces
    }

    /// `schema.GroupResource.String()`: `secrets`, `events.events.k8s.io`.
    pub fn qualified(self) -> String {
        if self.group().is_empty() {
            self.plural().to_string()
        } else {
            format!("{}.{}", self.plural(), self.group())
        }
    }

    pub fn from_path(group: &str, resource: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == resource)
    }

    /// Field labels each resource supports (the registries' GetAttrs / conversion funcs).
    pub fn field_labels(self) -> &'static [&'static str] {
        match self {
            Kind::Namespaces => &["metadata.name", "status.phase"],
            Kind::Secrets => &["metadata.name", "metadata.namespace", "type"],
            Kind::ConfigMaps | Kind::ServiceAccounts => &["metadata.name", "metadata.namespace"],
            Kind::Pods => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Kind::Events => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            Kind::EventsV1 => &[
                "metadata.name",
                "metadata.namespace",
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "reason",
                "reportingController",
                "type",
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `object` is the new state (for a delete: the last state carrying
/// the deletion's resourceVersion); `prev` the state before.
#[derive(Debug)]
pub struct StoredEvent {
    pub rv: u64,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub etype: EventType,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
}

type Key = (Kind, String, String);

/// Namespaces the NamespaceLifecycle plugin refuses to delete.
const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    events: VecDeque<Arc<StoredEvent>>,
    /// Watches and continue tokens from a resourceVersion below this get 410 Gone.
    compacted_rv: u64,
    /// How many events are retained for watch resumption.
    pub window: usize,
    tx: broadcast::Sender<Arc<StoredEvent>>,
    counter: u64,
    rng: u64,
}

pub fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn sort_key(kind: Kind, ns: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{ns}/{name}")
    } else {
        name.to_string()
    }
}

/// List/watch options parsed from the query.
#[derive(Debug, Default, Clone)]
pub struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// Decides which events a watch sees, as the watch cache's cacheWatcher does: an object
/// that stops matching the selectors is DELETED for that watcher, one that starts matching
/// is ADDED.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl WatchFilter {
    pub fn passes(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && meta_str(obj, "namespace") != ns
        {
            return false;
        }
        self.labels.matches(&labels_of(obj)) && self.fields.matches(obj)
    }

    pub fn convert(&self, ev: &StoredEvent) -> Option<(EventType, Value)> {
        if ev.kind != self.kind {
            return None;
        }
        let cur = ev.etype != EventType::Deleted && self.passes(&ev.object);
        let old = ev.prev.as_deref().is_some_and(|p| self.passes(p));
        match (cur, old) {
            (true, false) => Some((EventType::Added, (*ev.object).clone())),
            (true, true) => Some((EventType::Modified, (*ev.object).clone())),
            (false, true) => {
                if ev.etype == EventType::Deleted {
                    Some((EventType::Deleted, (*ev.object).clone()))
                } else {
                    let mut o = ev.prev.as_deref().cloned().unwrap_or(Value::Null);
                    meta_mut(&mut o).insert("resourceVersion".into(), json!(ev.rv.to_string()));
                    Some((EventType::Deleted, o))
                }
            }
            (false, false) => None,
        }
    }
}

/// Where a watch starts.
pub enum WatchStart {
    /// The current state as synthetic ADDED events, then changes after `rv`.
    Initial { objects: Vec<Arc<Value>>, rv: u64 },
    /// Replay of the retained events after the requested resourceVersion.
    Replay {
        events: Vec<Arc<StoredEvent>>,
        rv: u64,
    },
}

impl Store {
    pub fn new(window: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Self {
            rv: 0,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            compacted_rv: 0,
            window,
            tx,
            counter: 0,
            rng: seed,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tx.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough for names and uids in a test server.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn new_uid(&mut self) -> String {
        self.counter += 1;
        let r = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (r >> 32) as u32,
            (r >> 16) as u16,
            r & 0xfff,
            (r >> 20) & 0xfff,
            self.counter
        )
    }

    /// names.SimpleNameGenerator: 5 characters from "bcdfghjklmnpqrstvwxz2456789".
    fn generate_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.next_random() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    /// Writes (or deletes, with `None`) one object: a new resourceVersion, an event in the
    /// window, a broadcast to the watches. Returns the stored object (for a delete, the last
    /// state with the deletion's resourceVersion).
    fn commit(&mut self, kind: Kind, ns: &str, name: &str, new: Option<Value>) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        let key = (kind, ns.to_string(), name.to_string());
        let prev = self.objects.get(&key).cloned();
        let (etype, object) = match new {
            Some(mut obj) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                let obj = Arc::new(obj);
                self.objects.insert(key, obj.clone());
                let etype = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (etype, obj)
            }
            None => {
                self.objects.remove(&key);
                let mut last = prev
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| json!({"metadata": {}}));
                meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
                (EventType::Deleted, Arc::new(last))
            }
        };
        let ev = Arc::new(StoredEvent {
            rv,
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            etype,
            object: object.clone(),
            prev,
        });
        self.events.push_back(ev.clone());
        self.trim();
        let _ = self.tx.send(ev);
        object
    }

    fn trim(&mut self) {
        while self.events.len() > self.window {
            if let Some(e) = self.events.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    /// Forgets every retained event: a watch or continue token from any earlier
    /// resourceVersion now gets 410 Gone (like an etcd compaction).
    pub fn compact(&mut self) {
        self.events.clear();
        self.compacted_rv = self.rv;
    }

    pub fn set_window(&mut self, window: usize) {
        self.window = window;
        self.trim();
    }

    pub fn object(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The objects of `kind` as they were at `at` (None: now), sorted by storage key.
    fn objects_at(&self, kind: Kind, at: Option<u64>) -> Option<Vec<(String, Arc<Value>)>> {
        let mut map: BTreeMap<(String, String), Arc<Value>> = self
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|((_, ns, name), v)| ((ns.clone(), name.clone()), v.clone()))
            .collect();
        if let Some(at) = at {
            if at < self.compacted_rv {
                return None;
            }
            for ev in self.events.iter().rev() {
                if ev.rv <= at {
                    break;
                }
                if ev.kind != kind {
                    continue;
                }
                let key = (ev.namespace.clone(), ev.name.clone());
                match &ev.prev {
                    Some(p) => {
                        map.insert(key, p.clone());
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
        }
        let mut out: Vec<(String, Arc<Value>)> = map
            .into_iter()
            .map(|((ns, name), v)| (sort_key(kind, &ns, &name), v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    pub fn list_objects(&self, kind: Kind, ns: Option<&str>) -> Vec<Arc<Value>> {
        self.objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.object(kind, ns, name)
            .map(|o| (*o).clone())
            .ok_or_else(|| status::not_found(kind, name))
    }

    pub fn list(&self, kind: Kind, ns: Option<&str>, opts: &ListOpts) -> Result<Value, ApiError> {
        let (at, start) =
            if let Some(token) = opts.continue_token.as_deref().filter(|t| !t.is_empty()) {
                let (rv, start) = decode_continue(token)?;
                (rv, Some(start))
            } else {
                let exact = opts.resource_version_match.as_deref() == Some("Exact");
                let at = match opts.resource_version.as_deref() {
                    Some(rv) if exact => Some(rv.parse::<u64>().map_err(|_| {
                        status::bad_request(format!("invalid resource version: {rv}"))
                    })?),
                    _ => None,
                };
                (at.filter(|a| *a < self.rv), None)
            };
        let read_rv = at.unwrap_or(self.rv);
        let Some(snapshot) = self.objects_at(kind, at) else {
            return Err(if let Some(start) = &start {
                let mut err = status::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter, or use the continue token \
                     in this response to retrieve the remainder of the results. Continuing with the \
                     provided token results in an inconsistent list - objects that were created, \
                     modified, or deleted between the time the first chunk was returned and now may \
                     show up in the list."
                        .to_string(),
                );
                // The answer carries a token to go on, inconsistently, from the current state.
                err.body["metadata"] = json!({"continue": encode_continue(-1, start)});
                err
            } else {
                status::expired(format!(
                    "too old resource version: {} ({})",
                    read_rv, self.compacted_rv
                ))
            });
        };
        let filter = WatchFilter {
            kind,
            namespace: ns.map(str::to_string),
            labels: opts.labels.clone(),
            fields: opts.fields.clone(),
        };
        let matching: Vec<(String, Arc<Value>)> = snapshot
            .into_iter()
            .filter(|(key, _)| start.as_deref().is_none_or(|s| key.as_str() >= s))
            .filter(|(_, obj)| filter.passes(obj))
            .collect();
        let limit = opts.limit.filter(|l| *l > 0);
        let (page, more) = match limit {
            Some(l) if matching.len() > l => (&matching[..l], matching.len() - l),
            _ => (&matching[..], 0),
        };
        let items: Vec<Value> = page
            .iter()
            .map(|(_, o)| {
                // Items of a list carry no kind/apiVersion, as the apiserver encodes them.
                let mut o = (**o).clone();
                if let Some(m) = o.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                o
            })
            .collect();
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(read_rv.to_string()));
        if more > 0
            && let Some((last, _)) = page.last()
        {
            // Continuing an inconsistent list (rv -1) stays inconsistent.
            let token_rv = if at.is_none() && start.is_some() {
                -1
            } else {
                read_rv as i64
            };
            meta.insert(
                "continue".into(),
                json!(encode_continue(token_rv, &format!("{last}\u{0}"))),
            );
            if opts.labels.is_empty() && opts.fields.is_empty() {
                meta.insert("remainingItemCount".into(), json!(more));
            }
        }
        Ok(json!({
            "kind": format!("{}List", kind.kind_name()),
            "apiVersion": kind.api_version(),
            "metadata": meta,
            "items": items,
        }))
    }

    /// Where a watch from `rv` ("" / "0" / absent: the current state first) begins.
    pub fn watch_start(
        &self,
        kind: Kind,
        rv: Option<&str>,
        initial_events: bool,
    ) -> Result<WatchStart, ApiError> {
        let from = match rv {
            None | Some("") | Some("0") => None,
            Some(_) if initial_events => None,
            Some(r) => Some(
                r.parse::<u64>()
                    .map_err(|_| status::bad_request(format!("invalid resource version: {r}")))?,
            ),
        };
        match from {
            None => Ok(WatchStart::Initial {
                objects: self
                    .objects_at(kind, None)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, o)| o)
                    .collect(),
                rv: self.rv,
            }),
            Some(r) if r < self.compacted_rv => Err(status::expired(format!(
                "too old resource version: {} ({})",
                r, self.compacted_rv
            ))),
            Some(r) => Ok(WatchStart::Replay {
                events: self
                    .events
                    .iter()
                    .filter(|e| e.rv > r && e.kind == kind)
                    .cloned()
                    .collect(),
                rv: r.max(self.compacted_rv),
            }),
        }
    }

    // ---- writes ----

    /// POST: NamespaceLifecycle admission, defaulting, validation, AlreadyExists, store.
    pub fn create(
        &mut self,
        kind: Kind,
        ns: &str,
        obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        self.create_with(kind, ns, obj, dry_run, &|_| Vec::new())
    }

    /// `create` with extra validation (of the object after defaulting).
    pub fn create_with(
        &mut self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
        extra: &dyn Fn(&Value) -> Vec<FieldError>,
    ) -> Result<Value, ApiError> {
        check_type(kind, &obj)?;
        if !obj.is_object() {
            return Err(status::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let body_ns = meta_str(&obj, "namespace").to_string();
        if kind.namespaced() && !body_ns.is_empty() && body_ns != ns {
            return Err(status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let requested_name = meta_str(&obj, "name").to_string();
        if kind.namespaced() {
            match self.object(Kind::Namespaces, "", ns) {
                None => return Err(status::not_found(Kind::Namespaces, ns)),
                Some(n) if is_terminating(&n) => {
                    return Err(status::namespace_terminating(kind, &requested_name, ns));
                }
                Some(_) => {}
            }
        }
        let mut name = requested_name;
        if name.is_empty() {
            let generate = meta_str(&obj, "generateName").to_string();
            if generate.is_empty() {
                return Err(status::invalid(
                    kind,
                    "",
                    &[FieldError::required_detail(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
            name = format!("{generate}{}", self.generate_suffix());
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            for f in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "selfLink",
            ] {
                m.remove(f);
            }
            if kind.namespaced() {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
        }
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind_name());
        let store_ns = if kind.namespaced() { ns } else { "" };
        prepare(kind, &mut obj, None)?;
        let mut errs = validate(kind, &name, &obj, None);
        errs.extend(extra(&obj));
        if !errs.is_empty() {
            return Err(status::invalid(kind, &name, &errs));
        }
        if self.object(kind, store_ns, &name).is_some() {
            return Err(status::already_exists(kind, &name));
        }
        let uid = self.new_uid();
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        }
        if dry_run {
            return Ok(obj);
        }
        Ok((*self.commit(kind, store_ns, &name, Some(obj))).clone())
    }

    /// PUT. An empty metadata.resourceVersion is an unconditional update; a stale one is 409.
    pub fn update(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        check_type(kind, &obj)?;
        let body_name = meta_str(&obj, "name");
        if body_name != name {
            return Err(status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&obj, "namespace");
        if kind.namespaced() && !body_ns.is_empty() && body_ns != ns {
            return Err(status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let store_ns = if kind.namespaced() { ns } else { "" };
        let existing = self
            .object(kind, store_ns, name)
            .ok_or_else(|| status::not_found(kind, name))?;
        let rv = meta_str(&obj, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&existing, "resourceVersion") {
            return Err(status::conflict(kind, name, status::OPTIMISTIC_LOCK));
        }
        self.write_update(kind, store_ns, name, &existing, obj, dry_run)
    }

    fn write_update(
        &mut self,
        kind: Kind,
        store_ns: &str,
        name: &str,
        existing: &Value,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(status::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind_name());
        {
            let m = meta_mut(&mut obj);
            // Fields the server owns survive any update.
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "namespace",
                "generateName",
            ] {
                match existing.get("metadata").and_then(|em| em.get(f)) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.insert("name".into(), json!(name));
            m.remove("resourceVersion");
        }
        // The main resource cannot change status (that is the /status subresource).
        if matches!(kind, Kind::Namespaces | Kind::Pods) {
            match existing.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        prepare(kind, &mut obj, Some(existing))?;
        let errs = validate(kind, name, &obj, Some(existing));
        if !errs.is_empty() {
            return Err(status::invalid(kind, name, &errs));
        }
        // A write that changes nothing is not written: same resourceVersion, no event.
        let mut unchanged = existing.clone();
        meta_mut(&mut unchanged).remove("resourceVersion");
        if unchanged == obj {
            return Ok(existing.clone());
        }
        if dry_run {
            meta_mut(&mut obj).insert(
                "resourceVersion".into(),
                json!(meta_str(existing, "resourceVersion")),
            );
            return Ok(obj);
        }
        Ok((*self.commit(kind, store_ns, name, Some(obj))).clone())
    }

    /// PATCH: JSON merge patch, strategic merge patch (applied as a merge patch) and JSON
    /// patch. A patched object whose metadata.resourceVersion differs from the stored one
    /// is a 409 Conflict.
    pub fn patch(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let store_ns = if kind.namespaced() { ns } else { "" };
        patch_is_merge(content_type)?;
        let existing = self
            .object(kind, store_ns, name)
            .ok_or_else(|| status::not_found(kind, name))?;
        let mut doc = (*existing).clone();
        apply_patch_for(kind, &mut doc, content_type, body)?;
        let rv = meta_str(&doc, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&existing, "resourceVersion") {
            return Err(status::conflict(kind, name, status::OPTIMISTIC_LOCK));
        }
        if meta_str(&doc, "name") != name {
            return Err(status::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&doc, "name")
            )));
        }
        self.write_update(kind, store_ns, name, &existing, doc, dry_run)
    }

    /// Server-side apply, simplified: creates the object when missing (through the create
    /// checks, 201), otherwise merges the applied configuration, removes the fields this
    /// manager applied last time and no longer does, and records the manager's fields in
    /// metadata.managedFields (FieldsV1). Lists are atomic; conflicts with other managers
    /// are never reported (as with force=true).
    pub fn apply(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        body: &[u8],
        manager: &str,
        dry_run: bool,
    ) -> Result<(u16, Value), ApiError> {
        if manager.is_empty() {
            return Err(status::bad_request(
                "fieldManager is required for apply requests",
            ));
        }
        let mut applied: Value = serde_json::from_slice(body).map_err(|e| {
            status::bad_request(format!(
                "error decoding apply patch (this fake reads JSON only): {e}"
            ))
        })?;
        if !applied.is_object() {
            return Err(status::bad_request("an apply patch must be an object"));
        }
        if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
            return Err(status::bad_request(
                "an apply patch must set apiVersion and kind",
            ));
        }
        check_type(kind, &applied)?;
        match meta_str(&applied, "name") {
            "" => {
                meta_mut(&mut applied).insert("name".into(), json!(name));
            }
            n if n != name => {
                return Err(status::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        let paths = applied_paths(&applied);
        let entry = json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": kind.api_version(),
            "time": now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&paths),
        });
        let store_ns = if kind.namespaced() { ns } else { "" };
        let Some(existing) = self.object(kind, store_ns, name) else {
            meta_mut(&mut applied).insert("managedFields".into(), json!([entry]));
            return self.create(kind, ns, applied, dry_run).map(|o| (201, o));
        };
        let rv = meta_str(&applied, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&existing, "resourceVersion") {
            return Err(status::conflict(kind, name, status::OPTIMISTIC_LOCK));
        }
        let mut managed: Vec<Value> = existing
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mine = |e: &Value| {
            e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
        };
        let previous = managed
            .iter()
            .find(|e| mine(e))
            .and_then(|e| e.get("fieldsV1"))
            .map(from_fields_v1)
            .unwrap_or_default();
        let mut doc = (*existing).clone();
        for gone in previous.iter().filter(|p| !paths.contains(p)) {
            remove_path(&mut doc, gone);
        }
        json_patch::merge(&mut doc, &applied);
        meta_mut(&mut doc).remove("resourceVersion");
        let mut before = (*existing).clone();
        meta_mut(&mut before).remove("resourceVersion");
        if doc == before && previous == paths {
            return Ok((200, (*existing).clone()));
        }
        managed.retain(|e| !mine(e));
        managed.push(entry);
        meta_mut(&mut doc).insert("managedFields".into(), Value::Array(managed));
        self.write_update(kind, store_ns, name, &existing, doc, dry_run)
            .map(|o| (200, o))
    }

    /// DELETE: preconditions, namespaces go Terminating, Pods answer with the object,
    /// everything else with a Success Status.
    pub fn delete(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        options: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let store_ns = if kind.namespaced() { ns } else { "" };
        if kind == Kind::Namespaces && IMMORTAL_NAMESPACES.contains(&name) {
            return Err(status::forbidden(
                kind,
                name,
                "this namespace may not be deleted",
            ));
        }
        let existing = self
            .object(kind, store_ns, name)
            .ok_or_else(|| status::not_found(kind, name))?;
        if let Some(pre) = options.and_then(|o| o.get("preconditions")) {
            let uid = meta_str(&existing, "uid");
            if let Some(want) = pre.get("uid").and_then(Value::as_str)
                && want != uid
            {
                return Err(status::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
            let rv = meta_str(&existing, "resourceVersion");
            if let Some(want) = pre.get("resourceVersion").and_then(Value::as_str)
                && want != rv
            {
                return Err(status::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                    ),
                ));
            }
        }
        if kind == Kind::Namespaces {
            if is_terminating(&existing) {
                return Err(status::conflict(
                    kind,
                    name,
                    "The system is ensuring all content is removed from this namespace.  Upon completion, \
                     this namespace will automatically be purged by the system.",
                ));
            }
            let mut obj = (*existing).clone();
            mark_terminating(&mut obj);
            if dry_run {
                return Ok(obj);
            }
            return Ok((*self.commit(kind, "", name, Some(obj))).clone());
        }
        if dry_run {
            return Ok(if kind == Kind::Pods {
                (*existing).clone()
            } else {
                status::delete_success(kind, name, meta_str(&existing, "uid"))
            });
        }
        let deleted = self.commit(kind, store_ns, name, None);
        if kind == Kind::Pods {
            Ok((*deleted).clone())
        } else {
            Ok(status::delete_success(
                kind,
                name,
                meta_str(&existing, "uid"),
            ))
        }
    }

    // ---- direct access for tests (no admission, no faults, no log) ----

    /// Creates or replaces an object as is (server fields filled in). Emits a watch event.
    pub fn put(&mut self, kind: Kind, mut obj: Value) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").to_string();
        let ns = if kind.namespaced() {
            let ns = meta_str(&obj, "namespace");
            if ns.is_empty() {
                "default".to_string()
            } else {
                ns.to_string()
            }
        } else {
            String::new()
        };
        if kind.namespaced() && self.object(Kind::Namespaces, "", &ns).is_none() {
            self.put(Kind::Namespaces, json!({"metadata": {"name": ns}}))?;
        }
        match self.object(kind, &ns, &name) {
            Some(existing) => {
                let wanted_status = obj.get("status").cloned();
                let updated = self.write_update(kind, &ns, &name, &existing, obj, false)?;
                // put is the seeding path: it may set status too.
                match wanted_status {
                    Some(s)
                        if matches!(kind, Kind::Namespaces | Kind::Pods)
                            && updated.get("status") != Some(&s) =>
                    {
                        let mut o = updated;
                        o["status"] = s;
                        Ok((*self.commit(kind, &ns, &name, Some(o))).clone())
                    }
                    _ => Ok(updated),
                }
            }
            None => {
                if kind.namespaced() {
                    meta_mut(&mut obj).insert("namespace".into(), json!(ns));
                }
                // Seeded status (a Pod's phase, a Terminating namespace) is kept as given.
                self.create_unchecked(kind, &ns, obj)
            }
        }
    }

    fn create_unchecked(
        &mut self,
        kind: Kind,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").to_string();
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind_name());
        prepare(kind, &mut obj, None)?;
        let errs = validate(kind, &name, &obj, None);
        if !errs.is_empty() {
            return Err(status::invalid(kind, &name, &errs));
        }
        let uid = self.new_uid();
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        Ok((*self.commit(kind, ns, &name, Some(obj))).clone())
    }

    /// Marks a namespace Terminating as a DELETE would.
    pub fn terminate_namespace(&mut self, name: &str) -> Option<Value> {
        let existing = self.object(Kind::Namespaces, "", name)?;
        if is_terminating(&existing) {
            return Some((*existing).clone());
        }
        let mut obj = (*existing).clone();
        mark_terminating(&mut obj);
        Some((*self.commit(Kind::Namespaces, "", name, Some(obj))).clone())
    }

    /// What the namespace controller does at the end: removes every object in the
    /// namespace, then the namespace. Returns whether the namespace existed.
    pub fn finalize_namespace(&mut self, name: &str) -> bool {
        let contents: Vec<Key> = self
            .objects
            .keys()
            .filter(|(k, ns, _)| k.namespaced() && ns == name)
            .cloned()
            .collect();
        for (kind, ns, n) in contents {
            self.commit(kind, &ns, &n, None);
        }
        if self.object(Kind::Namespaces, "", name).is_none() {
            return false;
        }
        self.commit(Kind::Namespaces, "", name, None);
        true
    }

    /// Removes an object without any check (emits DELETED).
    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) -> bool {
        let store_ns = if kind.namespaced() { ns } else { "" };
        if self.object(kind, store_ns, name).is_none() {
            return false;
        }
        self.commit(kind, store_ns, name, None);
        true
    }
}

/// Whether a PATCH content type is a merge patch (else a JSON patch); 415 for the rest.
pub fn patch_is_merge(content_type: &str) -> Result<bool, ApiError> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => Ok(true),
        "application/json-patch+json" => Ok(false),
        other => Err(status::unsupported_media_type(other)),
    }
}

/// Applies a PATCH body of the given content type to `doc`: JSON merge patch, strategic
/// merge patch (as a merge patch: Secrets and ConfigMaps have no list merge keys), JSON
/// patch. Server-side apply and anything else is 415.
pub fn apply_patch(doc: &mut Value, content_type: &str, body: &[u8]) -> Result<(), ApiError> {
    let merge = patch_is_merge(content_type)?;
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
    if merge {
        if !patch.is_object() {
            return Err(status::bad_request("patch body must be a JSON object"));
        }
        json_patch::merge(doc, &patch);
        return Ok(());
    }
    let ops: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(doc, &ops).map_err(|_| status::json_patch_failed())
}

/// The lists of `kind` that a strategic merge patch merges by a key (`patchStrategy:"merge"`
/// with a `patchMergeKey` in k8s.io/api core/v1 types.go); every other list is replaced
/// whole. ServiceAccount: `secrets` merges by `name`, `imagePullSecrets` has no merge key
/// ("Atomic: will be replaced during a merge"), so a strategic patch of it replaces the list.
fn merge_keyed_lists(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::ServiceAccounts => &[("secrets", "name")],
        _ => &[],
    }
}

/// [`apply_patch`] for an object of `kind`: a strategic merge patch merges the lists that
/// have a merge key (items matched by key and merged, new ones appended, `$patch: delete`
/// removes one) before the rest is applied as a merge patch.
pub fn apply_patch_for(
    kind: Kind,
    doc: &mut Value,
    content_type: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let strategic = content_type.split(';').next().unwrap_or("").trim()
        == "application/strategic-merge-patch+json";
    if !strategic || merge_keyed_lists(kind).is_empty() {
        return apply_patch(doc, content_type, body);
    }
    let mut patch: Value = serde_json::from_slice(body)
        .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
    for (field, key) in merge_keyed_lists(kind) {
        let (Some(items), Some(existing)) = (
            patch.get(*field).and_then(Value::as_array).cloned(),
            doc.get(*field).and_then(Value::as_array).cloned(),
        ) else {
            continue;
        };
        let mut merged = existing;
        for item in items {
            let id = item.get(*key).cloned();
            let at = merged
                .iter()
                .position(|m| id.is_some() && m.get(*key) == id.as_ref());
            let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
            match (at, delete) {
                (Some(i), true) => {
                    merged.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => json_patch::merge(&mut merged[i], &item),
                (None, false) => merged.push(item),
            }
        }
        patch[*field] = Value::Array(merged);
    }
    let body = serde_json::to_vec(&patch).map_err(|e| status::bad_request(e.to_string()))?;
    apply_patch(doc, content_type, &body)
}

/// Leaf paths an apply configuration sets (identity fields excluded). Lists are atomic.
fn applied_paths(obj: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(obj, &mut Vec::new(), &mut out);
    out.retain(|p| {
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        !matches!(
            p.as_slice(),
            ["apiVersion"]
                | ["kind"]
                | [
                    "metadata",
                    "name"
                        | "namespace"
                        | "resourceVersion"
                        | "uid"
                        | "managedFields"
                        | "creationTimestamp"
                ]
        )
    });
    out.sort();
    out
}

/// Paths as FieldsV1: `{"f:data":{"f:key":{}}}`.
fn to_fields_v1(paths: &[Vec<String>]) -> Value {
    let mut root = json!({});
    for path in paths {
        let mut node = &mut root;
        for key in path {
            node = &mut node[format!("f:{key}")];
            if !node.is_object() {
                *node = json!({});
            }
        }
    }
    root
}

fn from_fields_v1(fields: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                out.push(path.clone());
            }
            return;
        }
        for (k, child) in children {
            path.push(k[2..].to_string());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(fields, &mut Vec::new(), &mut out);
    out.sort();
    out
}

fn remove_path(doc: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for key in parents {
        match node.get_mut(key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(last);
    }
}

pub fn is_terminating(ns: &Value) -> bool {
    ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

fn mark_terminating(obj: &mut Value) {
    meta_mut(obj).insert("deletionTimestamp".into(), json!(now_rfc3339()));
    obj["status"] = json!({"phase": "Terminating"});
}

fn encode_continue(rv: i64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// storage.DecodeContinue: base64url JSON `{"v":"meta.k8s.io/v1","rv":N,"start":"key"}`.
/// An rv of -1 means "from the current state" (the inconsistent continuation).
fn decode_continue(token: &str) -> Result<(Option<u64>, String), ApiError> {
    let bad = |why: &str| status::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad("server does not recognize this encoded version"));
    }
    let rv = match v.get("rv").and_then(Value::as_i64) {
        Some(-1) => None,
        Some(rv) if rv > 0 => Some(rv as u64),
        _ => {
            return Err(bad(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
    };
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("encoded continuation key is empty"))?;
    Ok((rv, start.to_string()))
}
