//! Control-message decoding (`Control::decode`) on arbitrary frames: never a
//! panic. A message portnode can send (all but SPAWN_REQUEST and
//! GROUP_LEADER, which it only receives) re-encodes to a frame that decodes
//! and encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portnode::distribution::message::Control;

fuzz_target!(|data: &[u8]| {
    let Ok(control) = Control::decode(data) else { return };
    if matches!(control, Control::SpawnRequest { .. } | Control::GroupLeader) {
        return;
    }
    let mut once = Vec::new();
    control.encode_into(&mut once).expect("a decoded message encodes");
    let again = Control::decode(&once[4..]).expect("a decoded message re-encodes to a decodable frame");
    let mut twice = Vec::new();
    again.encode_into(&mut twice).expect("a decoded message encodes");
    assert_eq!(once, twice, "encoding is not stable for {control:?}");
});
