#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idem_fuzz::command_parser(data));
