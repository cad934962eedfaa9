//! A port's program output, encoded straight to distribution frames for a
//! remote owner: no term is built and nothing is allocated per message.
//!
//! Each `{Port, {data, Data}}` (and `{data, {eol | noeol, Line}}`) frame is
//! a fixed head (length, pass-through byte, the `SEND_SENDER` control, the
//! message up to its data) and the data as a binary or a byte list. The
//! heads are encoded once, by the same encoder as every other message, so
//! the bytes are those [`crate::node::process::Process::send`] would send.

use super::codec::Kind;
use crate::distribution::message::Control;
use crate::etf::{self, a, tuple};
use eetf::{Pid, Term};

/// Encoded frames for one port and owner.
pub(crate) struct Outbound {
    binary: bool,
    /// The head of a `{data, Data}` frame (its bytes before the data, the
    /// length field zeroed), then what a line's frame adds to it: the
    /// `{eol, ` and `{noeol, ` before its data. One allocation, its exact
    /// size: a held port keeps it all along.
    bytes: Box<[u8]>,
    /// Where the data head ends, and the `eol` piece.
    ends: [u32; 2],
}

const BINARY_EXT: u8 = 109;
const STRING_EXT: u8 = 107;
const LIST_EXT: u8 = 108;
const SMALL_INTEGER_EXT: u8 = 97;
const NIL_EXT: u8 = 106;

impl Outbound {
    /// Frames from port `port` to `owner`, with data as binaries or byte
    /// lists. `None` if the pids do not encode (a node name is an atom of at
    /// most 255 characters, which always does): the port then sends its
    /// output as terms, whose encoding failure drops them with a warning.
    pub(crate) fn new(port: &Pid, owner: &Pid, binary: bool) -> Option<Outbound> {
        let head = |kind: Kind| {
            let empty = if binary { etf::binary(Vec::new()) } else { etf::byte_list(Vec::new()) };
            let data = match kind {
                Kind::Data => empty,
                Kind::Eol => tuple(vec![a("eol"), empty]),
                Kind::Noeol => tuple(vec![a("noeol"), empty]),
            };
            let msg = tuple(vec![Term::from(port.clone()), tuple(vec![a("data"), data])]);
            let mut frame = Vec::new();
            Control::SendSender { from: port.clone(), to: owner.clone(), msg }.encode_into(&mut frame).ok()?;
            // Less the empty data's encoding: a binary's tag and length, a string's tag and length.
            frame.truncate(frame.len() - if binary { 5 } else { 3 });
            frame[..4].fill(0);
            Some(frame)
        };
        let mut bytes = head(Kind::Data)?;
        let data_end = bytes.len();
        // The data is the message's last element: a line's head is the data
        // head and the line's tuple up to its data.
        let eol = head(Kind::Eol)?;
        let noeol = head(Kind::Noeol)?;
        debug_assert!(eol.starts_with(&bytes) && noeol.starts_with(&bytes));
        bytes.extend_from_slice(&eol[data_end..]);
        let eol_end = bytes.len();
        bytes.extend_from_slice(&noeol[data_end..]);
        Some(Outbound { binary, bytes: bytes.into_boxed_slice(), ends: [data_end as u32, eol_end as u32] })
    }

    /// A frame's head before its data: the data head, and what its kind adds.
    fn head(&self, kind: Kind) -> (&[u8], &[u8]) {
        let [data, eol] = self.ends.map(|e| e as usize);
        let (common, lines) = self.bytes.split_at(data);
        let piece = match kind {
            Kind::Data => &[][..],
            Kind::Eol => &lines[..eol - data],
            Kind::Noeol => &lines[eol - data..],
        };
        (common, piece)
    }

    /// Bytes the data of `len` bytes takes encoded (its tag and length included).
    fn data_len(&self, len: usize) -> usize {
        match (self.binary, len) {
            (true, _) => 5 + len,
            (false, 0..=0xffff) => 3 + len,
            (false, _) => 5 + 2 * len + 1,
        }
    }

    /// Appends the whole frame of a message carrying `data` to `out`.
    pub(crate) fn push(&self, kind: Kind, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.push_frame_head(kind, data.len(), out);
        push_data(self.binary, data, out);
        debug_assert_eq!(out.len() - start, self.frame_len(kind, data.len()));
    }

    /// Appends a frame's bytes up to its data's bytes; with binaries, the
    /// data can then be written as a piece of its own.
    pub(crate) fn push_head(&self, kind: Kind, len: usize, out: &mut Vec<u8>) {
        self.push_frame_head(kind, len, out);
        push_data_head(self.binary, len, out);
    }

    /// Appends a frame's bytes up to its data.
    fn push_frame_head(&self, kind: Kind, len: usize, out: &mut Vec<u8>) {
        let (common, piece) = self.head(kind);
        let frame = (self.frame_len(kind, len) - 4) as u32;
        out.extend_from_slice(&frame.to_be_bytes());
        out.extend_from_slice(&common[4..]);
        out.extend_from_slice(piece);
    }

    /// Bytes the whole frame of a message with `len` bytes of data takes.
    pub(crate) fn frame_len(&self, kind: Kind, len: usize) -> usize {
        let (common, piece) = self.head(kind);
        common.len() + piece.len() + self.data_len(len)
    }

    /// True if data is a binary: a payload can go as a piece of its own.
    pub(crate) fn binary(&self) -> bool {
        self.binary
    }
}

/// Appends the data of a port message, encoded as `erlang:open_port/2`'s
/// `binary` setting says: a binary, or a list of bytes.
pub(crate) fn push_data(binary: bool, data: &[u8], out: &mut Vec<u8>) {
    push_data_head(binary, data.len(), out);
    match (binary, data.len()) {
        (true, _) | (false, 0..=0xffff) => out.extend_from_slice(data),
        (false, _) => {
            for &b in data {
                out.extend_from_slice(&[SMALL_INTEGER_EXT, b]);
            }
            out.push(NIL_EXT);
        }
    }
}

/// Appends data's tag and length (a list's elements and tail follow it).
fn push_data_head(binary: bool, len: usize, out: &mut Vec<u8>) {
    match (binary, len) {
        (true, _) => {
            out.push(BINARY_EXT);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        (false, 0..=0xffff) => {
            out.push(STRING_EXT);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (false, _) => {
            out.push(LIST_EXT);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame `Process::send` would queue for the same message.
    fn by_term(port: &Pid, owner: &Pid, binary: bool, kind: Kind, data: &[u8]) -> Vec<u8> {
        let d = if binary { etf::binary(data.to_vec()) } else { etf::byte_list(data.to_vec()) };
        let d = match kind {
            Kind::Data => d,
            Kind::Eol => tuple(vec![a("eol"), d]),
            Kind::Noeol => tuple(vec![a("noeol"), d]),
        };
        let msg = tuple(vec![Term::from(port.clone()), tuple(vec![a("data"), d])]);
        let mut out = Vec::new();
        Control::SendSender { from: port.clone(), to: owner.clone(), msg }.encode_into(&mut out).expect("encodes");
        out
    }

    #[test]
    fn frames_are_byte_identical_to_encoded_terms() {
        let port = Pid::new("portnode_x@host", 77, 0, 1_700_000_001);
        let owner = Pid::new("owner@host", 123_456, 3, 9);
        for binary in [true, false] {
            let ob = Outbound::new(&port, &owner, binary).expect("pids encode");
            for kind in [Kind::Data, Kind::Eol, Kind::Noeol] {
                for len in [0usize, 1, 80, 255, 256, 65535, 65536, 70_000] {
                    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    let mut out = vec![9, 9];
                    ob.push(kind, &data, &mut out);
                    assert_eq!(&out[2..], &by_term(&port, &owner, binary, kind, &data)[..], "binary {binary} {kind:?} len {len}");
                    assert_eq!(out.len() - 2, ob.frame_len(kind, len));
                }
            }
        }
    }
}
