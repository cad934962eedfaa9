//! The term decoder (`etf::decode`) on arbitrary bytes: it must return a
//! term or an error, never panic, loop or allocate without bound. A term it
//! returns must survive encode-decode: after one round (`[0]` may come back
//! as the string "\0", map entries encode in hash order) every further round
//! encodes to the same size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portnode::etf;

fuzz_target!(|data: &[u8]| {
    if let Ok((term, used)) = etf::decode(data) {
        assert!(used <= data.len());
        let mut once = Vec::new();
        etf::encode_into(&term, &mut once).expect("a decoded term encodes");
        let (again, _) = etf::decode(&once).expect("a decoded term re-encodes to something decodable");
        let mut twice = Vec::new();
        etf::encode_into(&again, &mut twice).expect("a decoded term encodes");
        let (third, _) = etf::decode(&twice).expect("decodes");
        // Not `again == third`: eetf hashes a map by its entries' order, so a
        // map used as a map key compares unequal to itself re-decoded. The
        // encoded size does not depend on the order.
        let mut thrice = Vec::new();
        etf::encode_into(&third, &mut thrice).expect("a decoded term encodes");
        if !etf::has_map_key_map(&term) {
            assert_eq!(twice.len(), thrice.len(), "not the same term after encode-decode: {term:?}");
        }
    }
});

