use super::*;
use eetf::{Atom, Pid, Term};

fn enc(t: &Term) -> Vec<u8> {
    let mut v = Vec::new();
    encode_into(t, &mut v).expect("encodes");
    v
}

#[test]
fn round_trips_and_reports_length() {
    let t = tuple(vec![a("ok"), int(-5), int(1 << 40), binary(vec![1, 2, 3]), list(vec![a("x")])]);
    let mut bytes = enc(&t);
    let len = bytes.len();
    bytes.extend_from_slice(&[131, 106]);
    let (back, used) = decode(&bytes).expect("decodes");
    assert_eq!(back, t);
    assert_eq!(used, len);
}

#[test]
fn rejects_lying_counts_without_allocating() {
    // LIST_EXT claiming 4 billion elements in 6 bytes.
    assert_eq!(decode(&[131, 108, 255, 255, 255, 255]).unwrap_err(), TermError::Truncated);
    // BINARY_EXT claiming 4 GiB.
    assert_eq!(decode(&[131, 109, 255, 255, 255, 255, 0]).unwrap_err(), TermError::Truncated);
    // MAP_EXT claiming more pairs than bytes.
    assert_eq!(decode(&[131, 116, 0, 0, 1, 0, 97]).unwrap_err(), TermError::Truncated);
}

#[test]
fn rejects_tags_that_panic_in_eetf() {
    assert_eq!(decode(&[131, 82, 0]).unwrap_err(), TermError::Tag(82));
    assert_eq!(decode(&[131, 68, 0]).unwrap_err(), TermError::Tag(68));
    assert_eq!(decode(&[131, 77, 0, 0, 0, 1, 9, 0]).unwrap_err(), TermError::Malformed("bit binary tail"));
}

#[test]
fn a_fun_decodes_as_an_opaque_term_and_encodes_back_unchanged() {
    // term_to_binary(fun() -> {X, ok} end) in an erl shell (OTP 25): a
    // NEW_FUN_EXT whose environment holds a pid and the shell's bindings.
    let bytes: Vec<u8> = vec![131,112,0,0,0,215,0,6,83,97,170,70,21,144,209,189,241,235,98,209,166,235,8,0,0,0,43,0,0,0,1,100,0,8,101,114,108,95,101,118,97,108,97,43,98,0,50,155,13,88,100,0,13,110,111,110,111,100,101,64,110,111,104,111,115,116,0,0,0,9,0,0,0,0,0,0,0,0,104,6,97,1,108,0,0,0,1,104,2,100,0,1,88,88,100,0,13,110,111,110,111,100,101,64,110,111,104,111,115,116,0,0,0,9,0,0,0,0,0,0,0,0,106,100,0,4,110,111,110,101,100,0,4,110,111,110,101,116,0,0,0,0,108,0,0,0,1,104,5,100,0,6,99,108,97,117,115,101,97,1,106,106,108,0,0,0,1,104,3,100,0,5,116,117,112,108,101,97,1,108,0,0,0,2,104,3,100,0,3,118,97,114,97,1,100,0,1,88,104,3,100,0,4,97,116,111,109,97,1,100,0,2,111,107,106,106,106];
    let (fun, used) = decode(&bytes).expect("a fun decodes");
    assert_eq!(used, bytes.len());
    assert!(matches!(fun, Term::InternalFun(_)));
    let back = enc(&fun);
    assert_eq!(decode(&back).expect("and decodes again").0, fun);
    // Its size field must match what follows; every cut is an error, never a panic.
    let mut lying = bytes.clone();
    lying[4] = 214;
    assert_eq!(decode(&lying).unwrap_err(), TermError::Malformed("fun size"));
    for cut in 1..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "a fun cut at {cut} decoded");
    }
}

#[test]
fn rejects_deep_nesting() {
    let mut bytes = vec![131];
    for _ in 0..10_000 {
        bytes.extend_from_slice(&[104, 1]);
    }
    bytes.push(106);
    assert_eq!(decode(&bytes).unwrap_err(), TermError::TooDeep);
}

#[test]
fn random_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200_000 {
        let mut bytes = vec![131];
        for _ in 0..(seed % 24) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push((seed & 0xff) as u8);
        }
        let _ = decode(&bytes);
    }
}

#[test]
fn flattens_iodata() {
    let t = list(vec![int(104), binary(b"el".to_vec()), list(vec![int(108), int(111)])]);
    let mut out = Vec::new();
    assert!(iodata(&t, &mut out).is_some());
    assert_eq!(out, b"hello");
    assert!(iodata(&list(vec![int(300)]), &mut Vec::new()).is_none());
}

/// An atom in latin-1 (ATOM_EXT or SMALL_ATOM_EXT) of `name`'s bytes.
fn latin1_atom(tag: u8, name: &[u8]) -> Vec<u8> {
    let mut bytes = vec![131, tag];
    if tag == 100 {
        bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
    } else {
        bytes.push(name.len() as u8);
    }
    bytes.extend_from_slice(name);
    bytes
}

#[test]
fn latin1_atoms_decode_as_the_atoms_erlang_means_and_encode_back_in_utf8() {
    // 'é' x 255: 255 bytes in latin-1, 510 in UTF-8 (so ATOM_UTF8_EXT, not the small form).
    let name = "é".repeat(255);
    for tag in [100, 115] {
        let (term, used) = decode(&latin1_atom(tag, &[233; 255])).expect("a latin-1 atom decodes");
        assert_eq!(used, if tag == 100 { 259 } else { 258 });
        assert_eq!(term, a(&name));
        let back = enc(&term);
        assert_eq!(&back[..4], &[131, 118, 510u16.to_be_bytes()[0], 510u16.to_be_bytes()[1]]);
        assert_eq!(decode(&back).expect("decodes again").0, term);
    }
    // Latin-1 bytes that happen to be valid UTF-8 are still latin-1: "Ã©", not "é".
    assert_eq!(decode(&latin1_atom(115, &[0xc3, 0xa9])).expect("decodes").0, a("Ã©"));
    // Within a pid (its node) and a tuple, copied with the rest as it was.
    let mut bytes = vec![131, 104, 2, 88];
    bytes.extend_from_slice(&latin1_atom(100, b"n\xf8de@h\xf8st")[1..]);
    bytes.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, 97, 7]);
    let (term, used) = decode(&bytes).expect("decodes");
    assert_eq!(used, bytes.len());
    assert_eq!(term, tuple(vec![Term::from(Pid::new("nøde@høst", 5, 0, 9)), int(7)]));
}

#[test]
fn a_latin1_atom_in_a_fun_is_transcribed_and_the_funs_size_follows() {
    // The fun of `a_fun_decodes_as_an_opaque_term...`, its module 'erl_eval'
    // (ATOM_EXT, 8 bytes) become 'érl_évàl' in latin-1: 3 bytes more in UTF-8.
    let mut bytes: Vec<u8> = vec![131,112,0,0,0,215,0,6,83,97,170,70,21,144,209,189,241,235,98,209,166,235,8,0,0,0,43,0,0,0,1,100,0,8,101,114,108,95,101,118,97,108,97,43,98,0,50,155,13,88,100,0,13,110,111,110,111,100,101,64,110,111,104,111,115,116,0,0,0,9,0,0,0,0,0,0,0,0,104,6,97,1,108,0,0,0,1,104,2,100,0,1,88,88,100,0,13,110,111,110,111,100,101,64,110,111,104,111,115,116,0,0,0,9,0,0,0,0,0,0,0,0,106,100,0,4,110,111,110,101,100,0,4,110,111,110,101,116,0,0,0,0,108,0,0,0,1,104,5,100,0,6,99,108,97,117,115,101,97,1,106,106,108,0,0,0,1,104,3,100,0,5,116,117,112,108,101,97,1,108,0,0,0,2,104,3,100,0,3,118,97,114,97,1,100,0,1,88,104,3,100,0,4,97,116,111,109,97,1,100,0,2,111,107,106,106,106];
    let ascii_len = enc(&decode(&bytes).expect("the fun decodes").0).len();
    let module = bytes.windows(8).position(|w| w == b"erl_eval").expect("the module");
    bytes[module..module + 8].copy_from_slice(&[0xe9, b'r', b'l', b'_', 0xe9, b'v', 0xe0, b'l']);
    let (fun, used) = decode(&bytes).expect("the fun decodes");
    assert_eq!(used, bytes.len());
    let Term::InternalFun(f) = &fun else { panic!("not a fun: {fun}") };
    let eetf::InternalFun::New { module, .. } = &**f else { panic!("not a new fun") };
    assert_eq!(module.name, "érl_évàl");
    // Encoded again (every atom in UTF-8), its size covers what follows it.
    let back = enc(&fun);
    assert_eq!(back.len(), ascii_len + 3);
    assert_eq!(u32::from_be_bytes([back[2], back[3], back[4], back[5]]) as usize, back.len() - 2);
    assert_eq!(decode(&back).expect("decodes again").0, fun);
}

#[test]
fn atoms_over_255_characters_are_refused_as_erts_refuses_them() {
    let long = Err(TermError::Malformed("atom longer than 255 characters"));
    assert_eq!(decode(&latin1_atom(100, &[b'a'; 256])).map(|_| ()), long);
    let mut utf8 = vec![131, 118, 1, 0];
    utf8.extend_from_slice(&[b'a'; 256]);
    assert_eq!(decode(&utf8).map(|_| ()), long);
    // 255 characters of two bytes each: 510 bytes, and fine.
    let mut utf8 = vec![131, 118, 1, 254];
    utf8.extend_from_slice("é".repeat(255).as_bytes());
    assert_eq!(decode(&utf8).expect("255 characters").0, a(&"é".repeat(255)));
    assert_eq!(decode(&[131, 119, 2, 0xc3, 0x28]).unwrap_err(), TermError::Malformed("atom not UTF-8"));
}

#[test]
fn an_encode_failure_leaves_the_buffer_as_it_was() {
    // An atom over 65535 bytes does not encode; a peer's never is (255
    // characters at most), but the encoder must not leave half a term.
    let huge = tuple(vec![a("ok"), binary(vec![7; 100]), a(&"x".repeat(70_000))]);
    let mut out = vec![1, 2, 3];
    assert!(encode_into(&huge, &mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
    encode_into(&a("fine"), &mut out).expect("encodes");
    assert_eq!(decode(&out[3..]).expect("decodes").0, a("fine"));
}

#[test]
fn lists_of_negative_small_integers_go_out_as_lists() {
    // eetf alone writes [-1, 5] as the string [255, 5].
    for t in [list(vec![int(-1), int(5)]), tuple(vec![a("x"), list(vec![int(1), int(-300)])]), list(vec![list(vec![int(-7)])])] {
        let bytes = enc(&t);
        assert_eq!(decode(&bytes).expect("decodes").0, t, "{bytes:?}");
    }
    // A list of bytes is still a string.
    assert_eq!(enc(&list(vec![int(1), int(2)])), [131, 107, 0, 2, 1, 2]);
}

/// A LIST_EXT of `n` copies of the element `elem`, as a proper list.
fn list_of(n: usize, elem: &[u8]) -> Vec<u8> {
    let mut bytes = vec![131, 108];
    bytes.extend_from_slice(&(n as u32).to_be_bytes());
    for _ in 0..n {
        bytes.extend_from_slice(elem);
    }
    bytes.push(106);
    bytes
}

#[test]
fn decoding_costs_at_most_its_budget() {
    assert_eq!(TERM, 56, "eetf's Term changed size: check the budget's numbers in the module doc");
    // 16 million `[]`: 16 MB that eetf would make 900 MB of. Refused
    // by the walk, before eetf allocates anything.
    let nils = list_of(16_000_000, &[106]);
    assert!(matches!(decode(&nils), Err(TermError::TooCostly(_))));
    // Realistic big terms fit: a million small integers (28 times their
    // size), a 16 MB binary, 100 000 pairs, a map of 100 000 entries.
    let ints = list_of(1_000_000, &[97, 65]);
    assert!(decode_cost(&ints).expect("fits") <= decode_budget(ints.len()));
    assert_eq!(decode(&ints).expect("decodes").1, ints.len());
    let mut bin = vec![131, 109];
    bin.extend_from_slice(&16_000_000u32.to_be_bytes());
    bin.resize(bin.len() + 16_000_000, 1);
    assert!(decode_cost(&bin).expect("fits") < 17_000_000);
    let pairs = list_of(100_000, &[104, 2, 98, 0, 1, 0, 0, 100, 0, 2, b'o', b'k']);
    assert!(decode(&pairs).is_ok());
    let mut map = vec![131, 116];
    map.extend_from_slice(&100_000u32.to_be_bytes());
    for i in 0..100_000u32 {
        map.push(98);
        map.extend_from_slice(&i.to_be_bytes());
        map.extend_from_slice(&[97, 1]);
    }
    assert!(matches!(decode(&map), Ok((Term::Map(m), _)) if m.map.len() == 100_000));
    // Past the allowance, elements of one byte do not fit, two bytes do.
    let n = DECODED_ALLOWANCE / (TERM - DECODED_PER_BYTE) + 1_000;
    assert!(matches!(decode_cost(&list_of(n, &[106])), Err(TermError::TooCostly(_))));
    assert!(decode_cost(&list_of(n, &[97, 1])).is_ok());
}

#[test]
fn a_long_term_is_logged_in_brief() {
    let t = list(vec![a("x"); 100_000]);
    let text = brief(&t, 50);
    assert!(text.len() <= 53 && text.ends_with("..."), "{text}");
    assert_eq!(brief(&tuple(vec![a("ok"), int(1)]), 50), "{'ok',1}");
    // Cut at a character's boundary, never inside one.
    assert!(brief(&a(&"é".repeat(100)), 10).starts_with("'éééé"));
}

/// A term eetf represents as `term` except that its lists of small
/// integers may be byte strings or lists: the same Erlang term.
fn normal(term: &Term) -> Term {
    match term {
        Term::ByteList(b) => list(b.bytes.iter().map(|&x| int(i64::from(x))).collect()),
        Term::List(l) => list(l.elements.iter().map(normal).collect()),
        Term::ImproperList(l) => Term::from(eetf::ImproperList::from((l.elements.iter().map(normal).collect::<Vec<_>>(), normal(&l.last)))),
        Term::Tuple(t) => tuple(t.elements.iter().map(normal).collect()),
        Term::Map(m) => Term::from(eetf::Map::from(m.map.iter().map(|(k, v)| (normal(k), normal(v))).collect::<std::collections::HashMap<_, _>>())),
        other => other.clone(),
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Appends a random atom's encoding (any of the four forms) and returns the atom.
fn random_atom(rng: &mut Rng, out: &mut Vec<u8>) -> Atom {
    let most = if rng.below(4) == 0 { 256 } else { 12 };
    let chars = rng.below(most) as usize;
    if rng.below(2) == 0 {
        let name: Vec<u8> = (0..chars).map(|_| rng.below(256) as u8).collect();
        if chars < 256 && rng.below(2) == 0 {
            out.extend_from_slice(&[115, chars as u8]);
        } else {
            out.push(100);
            out.extend_from_slice(&(chars as u16).to_be_bytes());
        }
        out.extend_from_slice(&name);
        Atom::from(name.iter().map(|&b| char::from(b)).collect::<String>())
    } else {
        let name: String = (0..chars).map(|_| ['a', 'Z', '_', 'é', 'ÿ', '€', 'ψ', '😀'][rng.below(8) as usize]).collect();
        if name.len() < 256 && rng.below(2) == 0 {
            out.extend_from_slice(&[119, name.len() as u8]);
        } else {
            out.push(118);
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        Atom::from(name)
    }
}

/// Appends a random term's encoding and returns the term it means.
fn random_term(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) -> Term {
    match rng.below(if depth > 3 { 7 } else { 11 }) {
        0 => {
            let n = rng.below(256) as u8;
            out.extend_from_slice(&[97, n]);
            int(i64::from(n))
        }
        1 => {
            let n = rng.below(1 << 32) as u32 as i32;
            out.push(98);
            out.extend_from_slice(&n.to_be_bytes());
            int(i64::from(n))
        }
        2 => {
            out.push(106);
            Term::from(List::nil())
        }
        3 | 4 => Term::from(random_atom(rng, out)),
        5 => {
            let bytes: Vec<u8> = (0..rng.below(20)).map(|_| rng.below(256) as u8).collect();
            out.push(109);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
            binary(bytes)
        }
        6 => {
            out.push(88);
            let node = random_atom(rng, out);
            let (id, serial, creation) = (rng.below(1 << 32) as u32, rng.below(1 << 13) as u32, rng.below(1 << 32) as u32);
            for n in [id, serial, creation] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            Term::from(Pid { node, id, serial, creation })
        }
        7 => {
            let n = rng.below(6) as usize;
            out.extend_from_slice(&[104, n as u8]);
            tuple((0..n).map(|_| random_term(rng, depth + 1, out)).collect())
        }
        8 => {
            let n = rng.below(6) as usize;
            out.push(108);
            out.extend_from_slice(&(n as u32).to_be_bytes());
            let elements: Vec<Term> = (0..n).map(|_| random_term(rng, depth + 1, out)).collect();
            let tail = if rng.below(4) == 0 { random_term(rng, depth + 1, out) } else { out.push(106); Term::from(List::nil()) };
            match tail {
                Term::List(l) if l.is_nil() => list(elements),
                tail => Term::from(eetf::ImproperList::from((elements, tail))),
            }
        }
        9 => {
            let bytes: Vec<u8> = (0..rng.below(20)).map(|_| rng.below(256) as u8).collect();
            out.push(107);
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(&bytes);
            Term::from(eetf::ByteList::from(bytes))
        }
        _ => {
            let n = rng.below(4) as usize;
            out.push(116);
            out.extend_from_slice(&(n as u32).to_be_bytes());
            let mut map = std::collections::HashMap::new();
            for _ in 0..n {
                // Keys of atoms: no map among them (see `has_map_key_map`).
                let key = Term::from(random_atom(rng, out));
                let value = random_term(rng, depth + 1, out);
                map.insert(key, value);
            }
            Term::from(eetf::Map::from(map))
        }
    }
}

#[test]
fn random_terms_decode_as_meant_and_every_decoded_term_encodes_back() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..20_000 {
        let mut bytes = vec![131];
        let meant = random_term(&mut rng, 0, &mut bytes);
        let (term, used) = decode(&bytes).unwrap_or_else(|e| panic!("round {round}: {e}: {bytes:?}"));
        assert_eq!(used, bytes.len());
        assert_eq!(normal(&term), normal(&meant), "round {round}: {bytes:?}");
        // Bent: never a panic; whatever decodes encodes (whole) and means the same again.
        for _ in 0..4 {
            let mut bent = bytes.clone();
            let at = rng.below(bent.len() as u64) as usize;
            bent[at] = rng.below(256) as u8;
            if rng.below(3) == 0 {
                bent.truncate(rng.below(bent.len() as u64) as usize + 1);
            }
            let Ok((term, _)) = decode(&bent) else { continue };
            let mut out = vec![9];
            encode_into(&term, &mut out).unwrap_or_else(|e| panic!("round {round}: a decoded term does not encode: {e}"));
            let (again, used) = decode(&out[1..]).expect("what this node encodes decodes");
            assert_eq!(used, out.len() - 1);
            if !has_map_key_map(&term) {
                assert_eq!(normal(&again), normal(&term), "round {round}: {bent:?}");
            }
        }
    }
}
