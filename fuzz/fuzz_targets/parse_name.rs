#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = petrel::name::Name::parse(&String::from_utf8_lossy(data));
});
