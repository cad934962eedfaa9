//! External term format: safe decoding of what peers send, and small constructors.
//!
//! eetf 0.11 trusts its input: it panics on atom-cache references and on the
//! distribution header tag, pre-allocates whatever count a peer claims, and
//! recurses without bound. Every term a peer sends is therefore walked here
//! first, checking each length against the bytes actually present and the
//! nesting depth, before eetf is allowed to decode it.
//!
//! The walk also bounds what decoding costs. eetf makes a `Term` (56 bytes)
//! of every element, so a term of small elements grows as it is decoded: a
//! list of 16 million `[]` is 16 MB on the wire and 900 MB decoded. The
//! walker counts what eetf will allocate (a `Term` per element, a map's hash
//! table, the bytes of binaries, strings, atoms and bignums) and refuses a
//! term that would take more than [`DECODED_PER_BYTE`] times its encoded
//! size plus [`DECODED_ALLOWANCE`] (see [`decode_budget`]). Every element of
//! two bytes or more fits (a list of small integers takes 28 times its
//! size); what comes near the limit is a term made of one-byte elements
//! (`[]`) or of tiny map entries.
//!
//! Atoms: eetf reads a latin-1 atom (`ATOM_EXT`, `SMALL_ATOM_EXT`) as if it
//! were UTF-8, so one with a character above 127 would fail to decode, or
//! decode as another atom. The walker notes such atoms, and the term is then
//! decoded from a copy in which they are re-encoded as UTF-8 atoms (what
//! Erlang reads as the same atoms). As erts, an atom of more than 255
//! characters is refused: so every atom this node holds encodes again (in at
//! most 1020 bytes).

use eetf::{Atom, Binary, FixInteger, List, Pid, Reference, Term, Tuple};
use std::io::Cursor;
use std::mem::size_of;

/// Deepest nesting of tuples, lists and maps a peer may send.
const MAX_DEPTH: usize = 512;

/// The most characters in an atom, as erts allows (`MAX_ATOM_CHARACTERS`).
const MAX_ATOM_CHARS: usize = 255;

/// The most bytes decoding a term may allocate per byte of its encoding...
pub const DECODED_PER_BYTE: usize = 32;

/// ...plus this much, whatever its size.
pub const DECODED_ALLOWANCE: usize = 64 << 20;

/// The most bytes decoding a term of `len` encoded bytes may allocate.
pub fn decode_budget(len: usize) -> usize {
    len.saturating_mul(DECODED_PER_BYTE).saturating_add(DECODED_ALLOWANCE)
}

/// What eetf allocates for each element: the `Term` itself (in its
/// parent's vector, or a box).
const TERM: usize = size_of::<Term>();

/// What a map entry costs beyond its key and value: eetf builds a HashMap
/// by inserting, and its table holds up to twice the entries it has, and
/// for a moment while it grows, the old table as well.
const MAP_ENTRY_SLACK: usize = 2 * (2 * TERM + 1);

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
    #[error("term would take more than {0} bytes decoded (its budget)")]
    TooCostly(usize),
    #[error("malformed term: {0}")]
    Malformed(&'static str),
}

/// Decodes one term (with its version byte) from the front of `buf`.
/// Returns the term and the number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<(Term, usize), TermError> {
    let walked = walk(buf, false)?;
    let term = if walked.latin1 {
        // Only now, and rarely: a copy with the latin-1 atoms in UTF-8.
        let utf8 = walk(&buf[..walked.len], true)?.transcribed;
        Term::decode(Cursor::new(&utf8))
    } else {
        Term::decode(Cursor::new(&buf[..walked.len]))
    };
    let term = term.map_err(|_| TermError::Malformed("rejected by decoder"))?;
    Ok((term, walked.len))
}

/// What decoding the term at the front of `buf` would allocate, as the
/// walker counts it (for tests: it must cover what eetf really takes).
pub fn decode_cost(buf: &[u8]) -> Result<usize, TermError> {
    walk(buf, false).map(|w| w.cost)
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

/// A term's checked structure.
struct Walked {
    /// Bytes the term takes, version byte included.
    len: usize,
    /// What eetf will allocate to decode it.
    cost: usize,
    /// It holds a latin-1 atom with a character above 127.
    latin1: bool,
    /// With `transcribe`, the term with its latin-1 atoms in UTF-8.
    transcribed: Vec<u8>,
}

/// Checks the structure of the term at the front of `buf`, and its cost
/// against its budget; with `transcribe`, copies it, latin-1 atoms in UTF-8.
fn walk(buf: &[u8], transcribe: bool) -> Result<Walked, TermError> {
    match buf.first() {
        None => Err(TermError::Truncated),
        Some(131) => {
            let out = transcribe.then(|| {
                let mut out = Vec::with_capacity(buf.len() + buf.len() / 2);
                out.push(131);
                out
            });
            let mut walker = Walker { buf, pos: 1, cost: 0, budget: decode_budget(buf.len()), latin1: false, out };
            walker.term(0)?;
            let budget = decode_budget(walker.pos);
            if walker.cost > budget {
                return Err(TermError::TooCostly(budget));
            }
            Ok(Walked { len: walker.pos, cost: walker.cost, latin1: walker.latin1, transcribed: walker.out.unwrap_or_default() })
        }
        Some(&v) => Err(TermError::Version(v)),
    }
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What eetf will allocate for what is walked so far...
    cost: usize,
    /// ...which must stay within this.
    budget: usize,
    latin1: bool,
    /// The copy being made, if one is.
    out: Option<Vec<u8>>,
}

impl<'a> Walker<'a> {
    /// The next `n` bytes, not copied.
    fn skip(&mut self, n: usize) -> Result<&'a [u8], TermError> {
        let buf: &'a [u8] = self.buf;
        let end = self.pos.checked_add(n).ok_or(TermError::Truncated)?;
        let bytes = buf.get(self.pos..end).ok_or(TermError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }
    /// The next `n` bytes, copied if a copy is being made.
    fn take(&mut self, n: usize) -> Result<&'a [u8], TermError> {
        let bytes = self.skip(n)?;
        if let Some(out) = &mut self.out {
            out.extend_from_slice(bytes);
        }
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
    /// Counts `bytes` more that eetf will allocate.
    fn charge(&mut self, bytes: usize) -> Result<(), TermError> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.budget {
            return Err(TermError::TooCostly(self.budget));
        }
        Ok(())
    }
    /// A count of elements, each at least one byte: more than the bytes left is a lie.
    fn count(&mut self, n: usize) -> Result<usize, TermError> {
        if n > self.buf.len() - self.pos {
            return Err(TermError::Truncated);
        }
        Ok(n)
    }
    /// An atom, in any of its four forms; a latin-1 one is copied in UTF-8.
    fn atom(&mut self) -> Result<(), TermError> {
        let (latin1, n) = match self.skip(1)?[0] {
            100 => (true, self.skip(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)?),
            115 => (true, self.skip(1)?[0] as usize),
            118 => (false, self.skip(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)?),
            119 => (false, self.skip(1)?[0] as usize),
            tag => return Err(TermError::Tag(tag)),
        };
        let name = self.skip(n)?;
        let (chars, utf8_len) = if latin1 {
            (n, n + name.iter().filter(|&&b| b > 127).count())
        } else {
            let name = std::str::from_utf8(name).map_err(|_| TermError::Malformed("atom not UTF-8"))?;
            (name.chars().count(), n)
        };
        if chars > MAX_ATOM_CHARS {
            return Err(TermError::Malformed("atom longer than 255 characters"));
        }
        self.latin1 |= utf8_len != n;
        self.charge(utf8_len)?;
        if let Some(out) = &mut self.out {
            match u8::try_from(utf8_len) {
                Ok(len) => out.extend_from_slice(&[119, len]),
                // At most 255 characters: at most 1020 bytes.
                Err(_) => {
                    out.push(118);
                    out.extend_from_slice(&(utf8_len as u16).to_be_bytes());
                }
            }
            if latin1 {
                let mut utf8 = [0; 4];
                for &b in name {
                    out.extend_from_slice(char::from(b).encode_utf8(&mut utf8).as_bytes());
                }
            } else {
                out.extend_from_slice(name);
            }
        }
        Ok(())
    }
    fn term(&mut self, depth: usize) -> Result<(), TermError> {
        if depth > MAX_DEPTH {
            return Err(TermError::TooDeep);
        }
        self.charge(TERM)?;
        let d = depth + 1;
        let tag = *self.buf.get(self.pos).ok_or(TermError::Truncated)?;
        if matches!(tag, 100 | 115 | 118 | 119) {
            return self.atom();
        }
        self.take(1)?;
        match tag {
            97 => self.take(1).map(|_| ()),           // SMALL_INTEGER
            98 => self.take(4).map(|_| ()),           // INTEGER
            70 => self.take(8).map(|_| ()),           // NEW_FLOAT
            99 => self.take(31).map(|_| ()),          // FLOAT (string)
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
                self.take(n)?;
                self.charge(n)
            }
            108 => {
                let n = self.u32()?;
                let n = self.count(n)?;
                self.elements(n, d)?;
                self.term(d)
            }
            109 => {
                let n = self.u32()?;
                self.take(n)?;
                self.charge(n)
            }
            77 => {
                let n = self.u32()?;
                let bits = self.u8()?;
                if !(1..=8).contains(&bits) || n == 0 {
                    return Err(TermError::Malformed("bit binary tail"));
                }
                self.take(n)?;
                self.charge(n)
            }
            110 => {
                let n = self.u8()?;
                self.big(n)
            }
            111 => {
                let n = self.u32()?;
                self.big(n)
            }
            116 => {
                let n = self.u32()?;
                let n = self.count(n)?;
                for _ in 0..n {
                    self.charge(MAP_ENTRY_SLACK)?;
                    self.term(d)?;
                    self.term(d)?;
                }
                Ok(())
            }
            103 => self.atom().and_then(|_| self.take(9).map(|_| ())), // PID
            88 => self.atom().and_then(|_| self.take(12).map(|_| ())), // NEW_PID
            102 => self.atom().and_then(|_| self.take(5).map(|_| ())), // PORT
            89 => self.atom().and_then(|_| self.take(8).map(|_| ())),  // NEW_PORT
            120 => self.atom().and_then(|_| self.take(12).map(|_| ())), // V4_PORT
            101 => {
                // REFERENCE: boxed, as every reference.
                self.charge(size_of::<Reference>() + 4)?;
                self.atom().and_then(|_| self.take(5).map(|_| ()))
            }
            114 | 90 => {
                let n = self.u16()?;
                if n > 5 {
                    return Err(TermError::Malformed("reference id too long"));
                }
                self.charge(size_of::<Reference>() + 4 * n)?;
                self.atom()?;
                // NEW_REFERENCE has a 1-byte creation, NEWER_REFERENCE a 4-byte one.
                let creation_len = if tag == 114 { 1 } else { 4 };
                self.take(creation_len + 4 * n).map(|_| ())
            }
            113 => {
                self.charge(size_of::<eetf::ExternalFun>())?;
                self.atom()?;
                self.atom()?;
                self.term(d) // arity as small integer
            }
            112 => {
                // NEW_FUN_EXT: a fun in a message, kept as an opaque term
                // (eetf's InternalFun) that can be sent on unchanged. Its
                // size must cover exactly what follows it.
                self.charge(size_of::<eetf::InternalFun>())?;
                let start = self.pos - 1;
                let copy_start = self.out.as_ref().map(|out| out.len() - 1);
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
                // In a copy, atoms may have grown: its size is what follows it there.
                if let (Some(out), Some(copy_start)) = (&mut self.out, copy_start) {
                    let size = u32::try_from(out.len() - copy_start - 1).map_err(|_| TermError::Malformed("fun size"))?;
                    out[copy_start + 1..copy_start + 5].copy_from_slice(&size.to_be_bytes());
                }
                Ok(())
            }
            // The old FUN_EXT (before OTP 23), compressed terms, atom cache
            // refs and the distribution header are never sent to this node
            // (it offers no flag that allows them): reject them.
            tag => Err(TermError::Tag(tag)),
        }
    }
    /// A bignum's `n` bytes: eetf reads them into a buffer of its own, then
    /// makes the number's digits of them.
    fn big(&mut self, n: usize) -> Result<(), TermError> {
        let _sign = self.take(1)?;
        self.take(n)?;
        self.charge(n.saturating_mul(2).saturating_add(8))
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

/// How much of a peer's term a log line shows (see [`brief`]).
pub const LOGGED_TERM: usize = 1000;

/// `term` as Erlang prints it, cut after about `limit` bytes (and marked
/// so): what a log line shows of a message a peer sent, at a cost that does
/// not grow with the message (a list of a million elements prints as
/// megabytes).
pub fn brief(term: &Term, limit: usize) -> String {
    struct Capped {
        text: String,
        limit: usize,
    }
    impl std::fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = self.limit - self.text.len();
            if s.len() <= room {
                self.text.push_str(s);
                return Ok(());
            }
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&s[..cut]);
            // Stops the printing: the rest is never rendered.
            Err(std::fmt::Error)
        }
    }
    let mut capped = Capped { text: String::new(), limit };
    if std::fmt::write(&mut capped, format_args!("{term}")).is_err() {
        capped.text.push_str("...");
    }
    capped.text
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

/// Moves a term out of a message being taken apart, leaving `[]`: a
/// message's data is moved where it goes, never copied.
pub fn take(term: &mut Term) -> Term {
    std::mem::replace(term, Term::from(List::nil()))
}

/// An atom.
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
}
