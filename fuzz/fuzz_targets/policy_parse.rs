//! Policy::parse on arbitrary text never panics: a policy or located problems.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret_injector::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, "fuzz.yaml") {
        Ok(policy) => {
            let _ = policy.secret_names();
        }
        Err(err) => assert!(!err.0.is_empty(), "an error names at least one problem"),
    }
});
