//! The term decoder (`etf::decode`) on arbitrary bytes: it must return a
//! term or an error, never panic, loop or allocate without bound. A term it
//! returns must encode to bytes that decode to a term encoding to the same
//! bytes (the same Erlang term: `[0]` may come back as the string "\0").
#![no_main]
use libfuzzer_sys::fuzz_target;
use portnode::etf;

fuzz_target!(|data: &[u8]| {
    if let Ok((term, used)) = etf::decode(data) {
        assert!(used <= data.len());
        let mut once = Vec::new();
        etf::encode_into(&term, &mut once);
        let (again, _) = etf::decode(&once).expect("a decoded term re-encodes to something decodable");
        let mut twice = Vec::new();
        etf::encode_into(&again, &mut twice);
        assert_eq!(once, twice, "encoding is not stable for {term:?}");
    }
});
