//! The stdio codecs (`port::codec`): arbitrary output of a program, cut into
//! arbitrary reads, under each framing. Never a panic, and the frames give
//! back exactly the bytes they consumed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portnode::port::codec::{self, Frame};
use portnode::port::settings::Framing;

fn framing(pick: u8, max: u8) -> Framing {
    match pick % 5 {
        0 => Framing::Stream,
        1 => Framing::Packet(1),
        2 => Framing::Packet(2),
        3 => Framing::Packet(4),
        _ => Framing::Line(usize::from(max).max(1)),
    }
}

/// The bytes a frame stands for on the program's stdout.
fn wire(framing: Framing, frame: &Frame) -> Vec<u8> {
    match (framing, frame) {
        (Framing::Packet(_), Frame::Data(d)) => codec::encode(framing, d.clone()).expect("a decoded packet fits its header"),
        (_, Frame::Data(d)) => d.clone(),
        (_, Frame::Line { eol, bytes }) => {
            let mut b = bytes.clone();
            if *eol {
                b.push(b'\n');
            }
            b
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, max, step, rest @ ..] = data else { return };
    let framing = framing(*pick, *max);
    let step = usize::from(*step).max(1);
    let mut buf = Vec::new();
    let mut rebuilt = Vec::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec::decode(framing, &mut buf) {
                Ok(Some(frame)) => rebuilt.extend_from_slice(&wire(framing, &frame)),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if let Some(frame) = codec::decode_eof(framing, &mut buf) {
        rebuilt.extend_from_slice(&wire(framing, &frame));
    }
    rebuilt.extend_from_slice(&buf);
    assert_eq!(rebuilt, rest, "frames do not give back the bytes they consumed");
});
