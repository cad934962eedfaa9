//! The accepting side of the handshake (`accept::accept_on`), fed arbitrary
//! bytes as the initiator's messages, with each admission (ok, alive, nok)
//! picked by the first byte: never a panic, and never a completed handshake
//! without the right digest of the challenge (which the input cannot know).
#![no_main]
use libfuzzer_sys::fuzz_target;
use portnode::distribution::accept::{self, Admission, Admit, Pending};

struct Fixed(Admission);
impl Admit for Fixed {
    fn admission(&self, _: &str) -> Admission {
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let admit = Fixed([Admission::Ok, Admission::Alive, Admission::Nok][pick as usize % 3]);
    let me = accept::Me { name: "pn@fuzz", creation: 1, flags: portnode::distribution::flags(), cookie: "c" };
    let mut stream = tokio::io::join(rest, tokio::io::sink());
    let result = futures::executor::block_on(accept::accept_on(&mut stream, &me, &admit, &Pending::default()));
    // The challenge is random: only a wrong digest can come of arbitrary input.
    assert!(result.is_err(), "a handshake completed without the cookie: {result:?}");
    // The pure parsers on the same bytes.
    let _ = accept::parse_name(rest);
    let _ = accept::parse_complement(rest);
    let _ = accept::parse_challenge_reply(rest);
    let _ = accept::parse_alive_answer(rest);
});
