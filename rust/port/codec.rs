//! Framing of a program's stdio: stream, `{packet, N}` and `{line, L}`.
//!
//! `decode` takes what it can from the front of a buffer and returns
//! `Ok(None)` when it needs more bytes; every frame has a maximum length.

use super::settings::Framing;

/// One message cut from a program's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream or packet data.
    Data(Vec<u8>),
    /// A line: `eol` if it ended with a newline (not included), else a
    /// piece of a line longer than L, or the unterminated end of output.
    Line { eol: bool, bytes: Vec<u8> },
}

/// Largest `{packet, 4}` frame accepted from a program.
pub const MAX_PACKET: usize = 256 * 1024 * 1024;

/// Framing errors: the program broke its protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("packet of {0} bytes exceeds the limit of {MAX_PACKET}")]
    TooLarge(usize),
    #[error("message of {len} bytes does not fit a {{packet, {n}}} header")]
    DoesNotFit { len: usize, n: u8 },
}

/// What kind of frame a [`Cut`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stream or packet data.
    Data,
    /// A line that ended with a newline.
    Eol,
    /// A piece of a line longer than L (or the unterminated end of output).
    Noeol,
}

/// Where the next frame lies at the front of a buffer, found without
/// copying it: its payload's range, and how many bytes it takes up
/// (header and newline included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub kind: Kind,
    pub payload: std::ops::Range<usize>,
    pub used: usize,
}

/// Finds the next frame at the front of `buf`, if a whole one is there.
/// The buffer is not touched: a caller cuts many frames, then drains once.
pub fn next(framing: Framing, buf: &[u8]) -> Result<Option<Cut>, CodecError> {
    match framing {
        Framing::Stream => Ok((!buf.is_empty()).then(|| Cut { kind: Kind::Data, payload: 0..buf.len(), used: buf.len() })),
        Framing::Packet(n) => {
            let n = n as usize;
            if buf.len() < n {
                return Ok(None);
            }
            let len = buf[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            if len > MAX_PACKET {
                return Err(CodecError::TooLarge(len));
            }
            // Nothing is reserved for the announced length: the buffer
            // grows only as the bytes arrive.
            if buf.len() < n + len {
                return Ok(None);
            }
            Ok(Some(Cut { kind: Kind::Data, payload: n..n + len, used: n + len }))
        }
        Framing::Line(max) => {
            let window = &buf[..buf.len().min(max + 1)];
            if let Some(i) = memchr::memchr(b'\n', window) {
                return Ok(Some(Cut { kind: Kind::Eol, payload: 0..i, used: i + 1 }));
            }
            if buf.len() > max {
                return Ok(Some(Cut { kind: Kind::Noeol, payload: 0..max, used: max }));
            }
            Ok(None)
        }
    }
}

/// Cuts the next frame off the front of `buf`, if a whole one is there.
pub fn decode(framing: Framing, buf: &mut Vec<u8>) -> Result<Option<Frame>, CodecError> {
    let Some(cut) = next(framing, buf)? else { return Ok(None) };
    let bytes = if cut.used == buf.len() && cut.payload == (0..buf.len()) {
        std::mem::take(buf)
    } else {
        let bytes = buf[cut.payload.clone()].to_vec();
        buf.drain(..cut.used);
        bytes
    };
    Ok(Some(match cut.kind {
        Kind::Data => Frame::Data(bytes),
        Kind::Eol => Frame::Line { eol: true, bytes },
        Kind::Noeol => Frame::Line { eol: false, bytes },
    }))
}

/// What is left at end of output: in line mode, an unterminated last line.
pub fn decode_eof(framing: Framing, buf: &mut Vec<u8>) -> Option<Frame> {
    match framing {
        Framing::Line(_) if !buf.is_empty() => Some(Frame::Line { eol: false, bytes: std::mem::take(buf) }),
        _ => None,
    }
}

/// Frames `data` for the program's stdin.
pub fn encode(framing: Framing, data: Vec<u8>) -> Result<Vec<u8>, CodecError> {
    match framing {
        Framing::Packet(n) => {
            let limit = if n == 4 { u32::MAX as usize } else { (1usize << (8 * n as usize)) - 1 };
            if data.len() > limit {
                return Err(CodecError::DoesNotFit { len: data.len(), n });
            }
            let mut out = Vec::with_capacity(n as usize + data.len());
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[4 - n as usize..]);
            out.extend_from_slice(&data);
            Ok(out)
        }
        _ => Ok(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framing: Framing, input: &[u8]) -> Vec<Frame> {
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        while let Some(f) = decode(framing, &mut buf).unwrap() {
            out.push(f);
        }
        out.extend(decode_eof(framing, &mut buf));
        out
    }

    #[test]
    fn packets_need_whole_frames() {
        let mut buf = vec![0, 3, b'a', b'b'];
        assert_eq!(decode(Framing::Packet(2), &mut buf), Ok(None));
        buf.extend_from_slice(b"c\x00\x00");
        assert_eq!(decode(Framing::Packet(2), &mut buf), Ok(Some(Frame::Data(b"abc".to_vec()))));
        assert_eq!(decode(Framing::Packet(2), &mut buf), Ok(Some(Frame::Data(vec![]))));
        assert_eq!(encode(Framing::Packet(1), vec![7; 255]).unwrap().len(), 256);
        assert!(encode(Framing::Packet(1), vec![7; 256]).is_err());
        assert_eq!(decode(Framing::Packet(4), &mut vec![255, 255, 255, 255]), Err(CodecError::TooLarge(u32::MAX as usize)));
    }

    #[test]
    fn a_packet_header_reserves_nothing_before_its_bytes_arrive() {
        let mut buf = vec![0x0f, 0xff, 0xff, 0xff, 1, 2, 3];
        buf.shrink_to_fit();
        assert_eq!(decode(Framing::Packet(4), &mut buf), Ok(None));
        assert!(buf.capacity() < 1024, "reserved {} bytes for a packet not yet arrived", buf.capacity());
    }

    #[test]
    fn lines_split_at_l_and_keep_the_last_unterminated_piece() {
        let line = |eol, s: &str| Frame::Line { eol, bytes: s.as_bytes().to_vec() };
        assert_eq!(all(Framing::Line(4), b"ab\nabcdefg\nxy"), vec![
            line(true, "ab"), line(false, "abcd"), line(true, "efg"), line(false, "xy"),
        ]);
        assert_eq!(all(Framing::Line(4), b"abcd\n"), vec![line(true, "abcd")]);
    }

    #[test]
    fn random_chunking_gives_the_same_frames() {
        let input: Vec<u8> = (0..5000u32).map(|i| if i % 37 == 0 { b'\n' } else { (i % 251) as u8 }).collect();
        for framing in [Framing::Line(10), Framing::Line(100)] {
            let whole = all(framing, &input);
            let mut seed = 12345u64;
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < input.len() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let n = ((seed >> 33) % 50 + 1) as usize;
                let end = (pos + n).min(input.len());
                buf.extend_from_slice(&input[pos..end]);
                pos = end;
                while let Some(f) = decode(framing, &mut buf).unwrap() {
                    got.push(f);
                }
            }
            got.extend(decode_eof(framing, &mut buf));
            assert_eq!(got, whole);
        }
    }
}
