//! External term format: safe decoding of what peers send, and small constructors.
//!
//! eetf 0.11 trusts its input: it panics on atom-cache references and on the
//! distribution header tag, pre-allocates whatever count a peer claims, and
//! recurses without bound. Every term a peer sends is therefore walked here
//! first, checking each length against the bytes actually present and the
//! nesting depth, before eetf is allowed to decode it.

use eetf::{Atom, Binary, FixInteger, List, Pid, Reference, Term, Tuple};
use std::io::Cursor;

/// Deepest nesting of tuples, lists and maps a peer may send.
const MAX_DEPTH: usize = 512;

/// Why a term could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TermError {
    #[error("term truncated")]
    Truncated,
    #[error("bad version byte {0}")]
    Version(u8),
    #[error("unsupported term tag {0}")]
    Tag(u8),
    #[error("term nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("malformed term: {0}")]
    Malformed(&'static str),
}

/// Decodes one term (with its version byte) from the front of `buf`.
/// Returns the term and the number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<(Term, usize), TermError> {
    let len = checked_len(buf)?;
    let mut cursor = Cursor::new(&buf[..len]);
    let term = Term::decode(&mut cursor).map_err(|_| TermError::Malformed("rejected by decoder"))?;
    Ok((term, len))
}

/// Encodes a term with its version byte, appending to `out`. It fails only
/// for an atom over 65535 bytes (which no decoded atom is) or a reference
/// of over 65535 words; then `out` is left as it was, never with part of
/// the term.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) -> Result<(), eetf::EncodeError> {
    let start = out.len();
    let encoded = if holds_signed_byte_list(term) { lists_as_lists(term).encode(&mut *out) } else { term.encode(&mut *out) };
    encoded.inspect_err(|_| out.truncate(start))
}

/// True if `term` holds a list eetf 0.11 encodes wrongly: one of integers
/// below 256, some negative. eetf writes such a list as a byte string, each
/// integer cut to a byte (`[-1]` goes out as `[255]`).
fn holds_signed_byte_list(term: &Term) -> bool {
    match term {
        Term::List(l) => {
            let small = |e: &Term| matches!(e, Term::FixInteger(i) if i.value < 256);
            let signed = !l.elements.is_empty() && l.elements.iter().all(small) && l.elements.iter().any(|e| matches!(e, Term::FixInteger(i) if i.value < 0));
            signed || l.elements.iter().any(holds_signed_byte_list)
        }
        Term::ImproperList(l) => l.elements.iter().any(holds_signed_byte_list) || holds_signed_byte_list(&l.last),
        Term::Tuple(t) => t.elements.iter().any(holds_signed_byte_list),
        Term::Map(m) => m.map.iter().any(|(k, v)| holds_signed_byte_list(k) || holds_signed_byte_list(v)),
        Term::InternalFun(f) => matches!(&**f, eetf::InternalFun::New { free_vars, .. } if free_vars.iter().any(holds_signed_byte_list)),
        _ => false,
    }
}

/// A copy of `term` whose lists of small integers eetf encodes as lists:
/// each as an "improper" list ending in `[]`, which eetf writes as the
/// LIST_EXT of a proper one (a list ends in `[]`), not as a byte string.
fn lists_as_lists(term: &Term) -> Term {
    match term {
        Term::List(l) if !l.elements.is_empty() => {
            Term::from(eetf::ImproperList::from((l.elements.iter().map(lists_as_lists).collect::<Vec<_>>(), Term::from(List::nil()))))
        }
        Term::ImproperList(l) => Term::from(eetf::ImproperList::from((l.elements.iter().map(lists_as_lists).collect::<Vec<_>>(), lists_as_lists(&l.last)))),
        Term::Tuple(t) => tuple(t.elements.iter().map(lists_as_lists).collect()),
        Term::Map(m) => Term::from(eetf::Map::from(m.map.iter().map(|(k, v)| (lists_as_lists(k), lists_as_lists(v))).collect::<std::collections::HashMap<_, _>>())),
        Term::InternalFun(f) => match &**f {
            eetf::InternalFun::New { module, arity, pid, free_vars, index, uniq, old_index, old_uniq } => Term::from(eetf::InternalFun::New {
                module: module.clone(),
                arity: *arity,
                pid: pid.clone(),
                free_vars: free_vars.iter().map(lists_as_lists).collect(),
                index: *index,
                uniq: *uniq,
                old_index: *old_index,
                old_uniq: *old_uniq,
            }),
            old => Term::from(old.clone()),
        },
        other => other.clone(),
    }
}

/// Length of the term at the front of `buf`, after checking its structure.
fn checked_len(buf: &[u8]) -> Result<usize, TermError> {
    match buf.first() {
        None => Err(TermError::Truncated),
        Some(131) => {
            let mut walker = Walker { buf, pos: 1 };
            walker.term(0)?;
            Ok(walker.pos)
        }
        Some(&v) => Err(TermError::Version(v)),
    }
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TermError> {
        let end = self.pos.checked_add(n).ok_or(TermError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(TermError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self) -> Result<usize, TermError> {
        Ok(self.take(1)?[0] as usize)
    }
    fn u16(&mut self) -> Result<usize, TermError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, TermError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    /// A count of elements, each at least one byte: more than the bytes left is a lie.
    fn count(&mut self, n: usize) -> Result<usize, TermError> {
        if n > self.buf.len() - self.pos {
            return Err(TermError::Truncated);
        }
        Ok(n)
    }
    fn atom(&mut self) -> Result<(), TermError> {
        match self.u8()? as u8 {
            100 | 118 => {
                let n = self.u16()?;
                self.take(n).map(|_| ())
            }
            115 | 119 => {
                let n = self.u8()?;
                self.take(n).map(|_| ())
            }
            tag => Err(TermError::Tag(tag)),
        }
    }
    fn term(&mut self, depth: usize) -> Result<(), TermError> {
        if depth > MAX_DEPTH {
            return Err(TermError::TooDeep);
        }
        let d = depth + 1;
        match self.u8()? as u8 {
            97 => self.take(1).map(|_| ()),           // SMALL_INTEGER
            98 => self.take(4).map(|_| ()),           // INTEGER
            70 => self.take(8).map(|_| ()),           // NEW_FLOAT
            99 => self.take(31).map(|_| ()),          // FLOAT (string)
            100 | 115 | 118 | 119 => {
                self.pos -= 1;
                self.atom()
            }
            104 => {
                let n = self.u8()?;
                self.elements(n, d)
            }
            105 => {
                let n = self.u32()?;
                let n = self.count(n)?;
                self.elements(n, d)
            }
            106 => Ok(()), // NIL
            107 => {
                let n = self.u16()?;
                self.take(n).map(|_| ())
            }
            108 => {
                let n = self.u32()?;
                let n = self.count(n)?;
                self.elements(n, d)?;
                self.term(d)
            }
            109 => {
                let n = self.u32()?;
                self.take(n).map(|_| ())
            }
            77 => {
                let n = self.u32()?;
                let bits = self.u8()?;
                if !(1..=8).contains(&bits) || n == 0 {
                    return Err(TermError::Malformed("bit binary tail"));
                }
                self.take(n).map(|_| ())
            }
            110 => {
                let n = self.u8()?;
                self.take(n + 1).map(|_| ())
            }
            111 => {
                let n = self.u32()?;
                self.take(n.checked_add(1).ok_or(TermError::Truncated)?).map(|_| ())
            }
            116 => {
                let n = self.u32()?;
                let n = self.count(n)?;
                self.elements(n.checked_mul(2).ok_or(TermError::Truncated)?, d)
            }
            103 => self.atom().and_then(|_| self.take(9).map(|_| ())), // PID
            88 => self.atom().and_then(|_| self.take(12).map(|_| ())), // NEW_PID
            102 => self.atom().and_then(|_| self.take(5).map(|_| ())), // PORT
            89 => self.atom().and_then(|_| self.take(8).map(|_| ())),  // NEW_PORT
            120 => self.atom().and_then(|_| self.take(12).map(|_| ())), // V4_PORT
            101 => self.atom().and_then(|_| self.take(5).map(|_| ())), // REFERENCE
            tag @ (114 | 90) => {
                let n = self.u16()?;
                if n > 5 {
                    return Err(TermError::Malformed("reference id too long"));
                }
                self.atom()?;
                // NEW_REFERENCE has a 1-byte creation, NEWER_REFERENCE a 4-byte one.
                let creation_len = if tag == 114 { 1 } else { 4 };
                self.take(creation_len + 4 * n).map(|_| ())
            }
            113 => {
                self.atom()?;
                self.atom()?;
                self.term(d) // arity as small integer
            }
            112 => {
                // NEW_FUN_EXT: a fun in a message, kept as an opaque term
                // (eetf's InternalFun) that can be sent on unchanged. Its
                // size must cover exactly what follows it.
                let start = self.pos - 1;
                let size = self.u32()?;
                self.take(1 + 16 + 4)?; // arity, uniq, index
                let free = self.u32()?;
                let free = self.count(free)?;
                self.atom()?; // module
                self.integer()?; // old index
                self.integer()?; // old uniq
                self.pid()?;
                self.elements(free, d)?;
                if self.pos - start != size + 1 {
                    return Err(TermError::Malformed("fun size"));
                }
                Ok(())
            }
            // The old FUN_EXT (before OTP 23), compressed terms, atom cache
            // refs and the distribution header are never sent to this node
            // (it offers no flag that allows them): reject them.
            tag => Err(TermError::Tag(tag)),
        }
    }
    /// A small integer or integer, as eetf takes a fun's old index and uniq.
    fn integer(&mut self) -> Result<(), TermError> {
        match self.u8()? as u8 {
            97 => self.take(1).map(|_| ()),
            98 => self.take(4).map(|_| ()),
            tag => Err(TermError::Tag(tag)),
        }
    }
    fn pid(&mut self) -> Result<(), TermError> {
        match self.u8()? as u8 {
            103 => self.atom().and_then(|_| self.take(9).map(|_| ())),
            88 => self.atom().and_then(|_| self.take(12).map(|_| ())),
            tag => Err(TermError::Tag(tag)),
        }
    }
    fn elements(&mut self, n: usize, depth: usize) -> Result<(), TermError> {
        for _ in 0..n {
            self.term(depth)?;
        }
        Ok(())
    }
}

/// An atom term.
/// True if `term` holds a map with a map among its keys. eetf keeps a map
/// in a HashMap whose key hash depends on entry order, so such keys can
/// collide or split from one decode to the next: such a term's encoded
/// size is not stable across encode-decode rounds (the fuzz target and its
/// regression test allow for it).
pub fn has_map_key_map(term: &Term) -> bool {
    fn is_or_holds_map(t: &Term) -> bool {
        match t {
            Term::Map(_) => true,
            Term::List(l) => l.elements.iter().any(is_or_holds_map),
            Term::ImproperList(l) => l.elements.iter().any(is_or_holds_map) || is_or_holds_map(&l.last),
            Term::Tuple(t) => t.elements.iter().any(is_or_holds_map),
            _ => false,
        }
    }
    match term {
        Term::Map(m) => m.map.iter().any(|(k, v)| is_or_holds_map(k) || has_map_key_map(k) || has_map_key_map(v)),
        Term::List(l) => l.elements.iter().any(has_map_key_map),
        Term::ImproperList(l) => l.elements.iter().any(has_map_key_map) || has_map_key_map(&l.last),
        Term::Tuple(t) => t.elements.iter().any(has_map_key_map),
        _ => false,
    }
}

/// Roughly the bytes `term` takes encoded (exact for binaries and byte
/// lists, close for the rest); cheap enough to compute for every message.
pub fn weight(term: &Term) -> usize {
    match term {
        Term::Binary(b) => 5 + b.bytes.len(),
        Term::ByteList(l) => 3 + l.bytes.len(),
        Term::List(l) => 5 + l.elements.iter().map(weight).sum::<usize>(),
        Term::ImproperList(l) => 5 + l.elements.iter().map(weight).sum::<usize>() + weight(&l.last),
        Term::Tuple(t) => 5 + t.elements.iter().map(weight).sum::<usize>(),
        Term::Map(m) => 5 + m.map.iter().map(|(k, v)| weight(k) + weight(v)).sum::<usize>(),
        Term::Atom(a) => 3 + a.name.len(),
        Term::BitBinary(b) => 6 + b.bytes.len(),
        Term::BigInteger(_) => 16,
        _ => 9,
    }
}

pub fn atom(name: &str) -> Atom {
    Atom::from(name)
}

/// A tuple term from its elements.
pub fn tuple(elements: Vec<Term>) -> Term {
    Term::from(Tuple::from(elements))
}

/// A proper list term.
pub fn list(elements: Vec<Term>) -> Term {
    Term::from(List::from(elements))
}

/// A binary term.
pub fn binary(bytes: Vec<u8>) -> Term {
    Term::from(Binary::from(bytes))
}

/// Bytes as an Erlang list of integers (a string). eetf's byte-string
/// encoding only holds 65535 bytes, so longer ones go as a plain list.
pub fn byte_list(bytes: Vec<u8>) -> Term {
    if bytes.len() <= usize::from(u16::MAX) {
        Term::from(eetf::ByteList::from(bytes))
    } else {
        list(bytes.into_iter().map(|b| int(i64::from(b))).collect())
    }
}

/// An integer term (small or big, whichever fits).
pub fn int(n: i64) -> Term {
    match i32::try_from(n) {
        Ok(v) => Term::from(FixInteger::from(v)),
        Err(_) => Term::from(eetf::BigInteger::from(n)),
    }
}

/// An unsigned integer term (a bignum past i32, as erts makes it).
pub fn uint(n: u64) -> Term {
    match i32::try_from(n) {
        Ok(v) => Term::from(FixInteger::from(v)),
        Err(_) => Term::from(eetf::BigInteger::from(n)),
    }
}

/// The atom `name` as a term.
pub fn a(name: &str) -> Term {
    Term::from(atom(name))
}

/// The name of an atom term, if it is one.
pub fn as_atom(term: &Term) -> Option<&str> {
    match term {
        Term::Atom(a) => Some(a.name.as_str()),
        _ => None,
    }
}

/// The elements of a tuple term, if it is one.
pub fn as_tuple(term: &Term) -> Option<&[Term]> {
    match term {
        Term::Tuple(t) => Some(&t.elements),
        _ => None,
    }
}

/// The pid inside a term, if it is one.
pub fn as_pid(term: &Term) -> Option<&Pid> {
    match term {
        Term::Pid(p) => Some(p),
        _ => None,
    }
}

/// The reference inside a term, if it is one.
pub fn as_ref(term: &Term) -> Option<&Reference> {
    match term {
        Term::Reference(r) => Some(r),
        _ => None,
    }
}

/// An integer term as i64, if it is one that fits.
pub fn as_int(term: &Term) -> Option<i64> {
    match term {
        Term::FixInteger(i) => Some(i64::from(i.value)),
        Term::BigInteger(b) => i64::try_from(&b.value).ok(),
        _ => None,
    }
}

/// The elements of a proper list term (`[]`, a list, or a byte string), if it is one.
pub fn as_list(term: &Term) -> Option<Vec<Term>> {
    match term {
        Term::List(l) => Some(l.elements.clone()),
        Term::ByteList(b) => Some(b.bytes.iter().map(|&x| int(i64::from(x))).collect()),
        _ => None,
    }
}

/// Flattens an iodata term (binary, byte, nested list of those) into bytes,
/// as `erlang:iolist_to_binary/1` does. `None` if it is not iodata.
pub fn iodata(term: &Term, out: &mut Vec<u8>) -> Option<()> {
    iodata_at(term, out, 0)
}

fn iodata_at(term: &Term, out: &mut Vec<u8>, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    match term {
        Term::Binary(b) => out.extend_from_slice(&b.bytes),
        Term::ByteList(b) => out.extend_from_slice(&b.bytes),
        Term::List(l) => {
            for e in &l.elements {
                match e {
                    Term::FixInteger(i) => out.push(u8::try_from(i.value).ok()?),
                    other => iodata_at(other, out, depth + 1)?,
                }
            }
        }
        Term::ImproperList(l) => {
            for e in &l.elements {
                match e {
                    Term::FixInteger(i) => out.push(u8::try_from(i.value).ok()?),
                    other => iodata_at(other, out, depth + 1)?,
                }
            }
            match &*l.last {
                Term::Binary(b) => out.extend_from_slice(&b.bytes),
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
