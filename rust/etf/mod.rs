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

mod terms;
mod walker;
#[cfg(test)]
mod tests;

pub use terms::*;

use eetf::{List, Term};
use std::io::Cursor;
use std::mem::size_of;
use walker::walk;

/// Deepest nesting of tuples, lists and maps a peer may send.
pub(crate) const MAX_DEPTH: usize = 512;

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

