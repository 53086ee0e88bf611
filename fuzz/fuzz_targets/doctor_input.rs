//! doctor's and `mutate`'s reader of files (multi-document YAML, JSON objects and arrays, `List`s), on untrusted
//! text. Beyond "never panics": every object read is a JSON object, and its line is inside the text.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = wi_webhook::input::parse_text("fuzz.yaml", text) else {
        return;
    };
    let lines = text.lines().count().max(1);
    for object in &loaded {
        assert!(object.object.is_object(), "{:?}", object.object);
        if let Some(source) = &object.source {
            assert!(
                (1..=lines + 1).contains(&source.line),
                "line {} of {lines}",
                source.line
            );
        }
    }
});
