#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::format::fuzz::condemned(data));
