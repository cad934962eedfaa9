//! Small constructors of terms, accessors, and what the node reads of them
//! (iodata, a term's weight, a short form for logs).

use super::MAX_DEPTH;
use eetf::{Atom, Binary, FixInteger, List, Pid, Reference, Term, Tuple};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

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

/// An Erlang string (a list of code points, or a binary) as OS bytes in
/// UTF-8, the way a VM with `+fnu` encodes file names and arguments.
pub fn os_string(term: &Term) -> Option<OsString> {
    let bytes = match term {
        Term::Binary(b) => b.bytes.clone(),
        Term::ByteList(b) => b.bytes.iter().map(|&c| char::from(c)).collect::<String>().into_bytes(),
        Term::List(l) => l
            .elements
            .iter()
            .map(|e| as_int(e).and_then(|c| u32::try_from(c).ok()).and_then(char::from_u32))
            .collect::<Option<String>>()?
            .into_bytes(),
        _ => return None,
    };
    if bytes.contains(&0) {
        return None;
    }
    Some(OsString::from_vec(bytes))
}
