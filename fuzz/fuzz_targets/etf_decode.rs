//! The term decoder (`etf::decode`) on arbitrary bytes: it must return a
//! term or an error, never panic, loop or allocate without bound. A term it
//! returns must survive encode-decode as the same Erlang term: compared
//! after one round, since `[0]` may come back as the string "\0", and map
//! entries encode in hash order.
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
        let (third, _) = etf::decode(&twice).expect("decodes");
        if !format!("{again:?}").contains("NaN") {
            assert_eq!(again, third, "not the same term after encode-decode: {term:?}");
        }
    }
});
