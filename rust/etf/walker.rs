//! The check of a term's structure and cost before eetf decodes it (see
//! the module doc of [`super`]): lengths against the bytes present, nesting
//! depth, what decoding will allocate, and latin-1 atoms re-encoded.

use super::*;
use eetf::Reference;

/// A term's checked structure.
pub(super) struct Walked {
    /// Bytes the term takes, version byte included.
    pub(super) len: usize,
    /// What eetf will allocate to decode it.
    pub(super) cost: usize,
    /// It holds a latin-1 atom with a character above 127.
    pub(super) latin1: bool,
    /// With `transcribe`, the term with its latin-1 atoms in UTF-8.
    pub(super) transcribed: Vec<u8>,
}

/// Checks the structure of the term at the front of `buf`, and its cost
/// against its budget; with `transcribe`, copies it, latin-1 atoms in UTF-8.
pub(super) fn walk(buf: &[u8], transcribe: bool) -> Result<Walked, TermError> {
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

