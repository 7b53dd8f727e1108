//! keyring::index_key and keyring::urls_match never panic on arbitrary strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret_injector::keyring::{self, Keyring, RegistryPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // First line: a pattern (auths key); the rest: a lookup target.
    let (pattern, target) = text.split_once('\n').unwrap_or((text, ""));
    let key = keyring::index_key(pattern);
    let _ = keyring::urls_match(pattern, target);
    let _ = keyring::urls_match(target, pattern);
    let _ = keyring::is_default_registry_match(target);
    if let Some(key) = &key {
        let _ = keyring::urls_match(key, target);
    }
    if let Some(compiled) = RegistryPattern::parse(pattern) {
        assert_eq!(Some(compiled.index_key()), key.as_deref());
        let _ = compiled.matches(target);
    }
    let mut ring: Keyring<()> = Keyring::new();
    ring.add(pattern, ());
    let _ = ring.lookup(target).found();
});
