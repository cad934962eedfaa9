//! The spawner's messages (`Request::decode`, `Reply::decode`) on arbitrary
//! bodies: never a panic, and what decodes re-encodes to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portnode::spawner::protocol::{next_message, Reply, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let mut framed = Vec::new();
        request.encode(&mut framed).expect("a decoded request encodes");
        let (body, _) = next_message(&framed).expect("a frame we made").expect("complete");
        assert_eq!(Request::decode(body).expect("re-decodes"), request);
    }
    if let Ok(reply) = Reply::decode(data) {
        let mut framed = Vec::new();
        reply.encode(&mut framed);
        let (body, _) = next_message(&framed).expect("a frame we made").expect("complete");
        assert_eq!(Reply::decode(body).expect("re-decodes"), reply);
    }
    let _ = next_message(data);
});
