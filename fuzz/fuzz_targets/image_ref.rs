//! ImageRef::parse never panics, and a parsed reference re-parses from its canonical form
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret_injector::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = ImageRef::parse(image) else {
        return;
    };
    let canonical = parsed.canonical();
    match ImageRef::parse(&canonical) {
        Ok(again) => assert_eq!(
            again, parsed,
            "{image:?} -> canonical {canonical:?} re-parses differently"
        ),
        Err(err) => panic!("{image:?} -> canonical {canonical:?} does not re-parse: {err}"),
    }
    // The other renderings must not panic either.
    let _ = (
        parsed.familiar(),
        parsed.docker_ref(),
        parsed.lookup_target(),
    );
});
