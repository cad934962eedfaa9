//! Every input a fuzz target (fuzz/fuzz_targets) ever failed on, kept in
//! tests/fuzz_regressions/ and named by target (`etf_*`, `control_*`,
//! `handshake_*`, `codec_*`), checked against the same properties the
//! target checks. A new crash: copy its artifact there with the right prefix.

use portnode::distribution::message::Control;
use portnode::etf;
use std::path::PathBuf;

fn inputs(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fuzz_regressions")
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, path)| (name, std::fs::read(path).expect("read input")))
        .collect();
    found.sort();
    found
}

#[test]
fn term_decoding_is_stable_on_every_kept_input() {
    let kept = inputs("etf_");
    assert!(!kept.is_empty());
    for (name, data) in kept {
        let Ok((term, _)) = etf::decode(&data) else { continue };
        let mut once = Vec::new();
        etf::encode_into(&term, &mut once).expect("a decoded term encodes");
        let (again, _) = etf::decode(&once).unwrap_or_else(|e| panic!("{name}: re-encoded term does not decode: {e}"));
        let mut twice = Vec::new();
        etf::encode_into(&again, &mut twice).expect("a decoded term encodes");
        let (third, _) = etf::decode(&twice).unwrap_or_else(|e| panic!("{name}: {e}"));
        // eetf hashes maps by entry order (a map as a map key is unequal to
        // itself re-decoded): compare what the order cannot change.
        let mut thrice = Vec::new();
        etf::encode_into(&third, &mut thrice).expect("a decoded term encodes");
        if !etf::has_map_key_map(&term) {
            assert_eq!(twice.len(), thrice.len(), "{name}");
        }
    }
}

#[test]
fn control_decoding_is_stable_on_every_kept_input() {
    let kept = inputs("control_");
    assert!(!kept.is_empty());
    for (name, data) in kept {
        let Ok(control) = Control::decode(&data) else { continue };
        if matches!(control, Control::SpawnRequest { .. } | Control::GroupLeader) {
            continue;
        }
        let mut once = Vec::new();
        control.encode_into(&mut once).expect("a decoded message encodes");
        let again = Control::decode(&once[4..]).unwrap_or_else(|e| panic!("{name}: re-encoded frame does not decode: {e}"));
        let mut twice = Vec::new();
        again.encode_into(&mut twice).expect("a decoded message encodes");
        assert_eq!(once, twice, "{name}");
    }
}

/// The inputs the fuzzers flagged so far were the harness being too strict,
/// and they pin down three facts: `[0]` as a LIST_EXT is the same term as
/// the string "\0"; a SPAWN_REQUEST whose argument list is a STRING_EXT
/// decodes (erl_dist 0.8 fails on it); a map decodes whatever its entries'
/// order (they re-encode in hash order); a map used as a map key decodes,
/// though eetf then compares it unequal to itself re-decoded.
#[test]
fn the_first_flagged_inputs_decode() {
    let (term, _) = etf::decode(&inputs("etf_list_of_small_int")[0].1).expect("decodes");
    let mut bytes = Vec::new();
    etf::encode_into(&term, &mut bytes).expect("a decoded term encodes");
    assert_eq!(bytes, [131, 107, 0, 1, 0], "[0] encodes as the string \"\\0\"");
    let control = Control::decode(&inputs("control_spawn_request_string_args")[0].1).expect("decodes");
    assert!(matches!(control, Control::SpawnRequest { .. }), "{control:?}");
    let (map, _) = etf::decode(&inputs("etf_map_in_hash_order")[0].1).expect("decodes");
    assert!(matches!(map, eetf::Term::Map(ref m) if m.map.len() == 2), "{map:?}");
}

