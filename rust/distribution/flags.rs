//! The distribution flags portnode offers, with OTP's own values.
//!
//! The values are those of OTP's `lib/kernel/include/dist.hrl` (the same in
//! OTP 25, 27 and 29), written out here rather than taken from erl_dist:
//! erl_dist 0.8 puts `MANDATORY_25_DIGEST` at bit 36, which in OTP is the
//! internal `LOCAL_EXT`; OTP's `DFLAG_MANDATORY_25_DIGEST` is bit 26. A peer
//! sees only these bits; `tests/erlang/dist_SUITE` checks them against
//! what the running OTP requires and knows.

pub const EXTENDED_REFERENCES: u64 = 0x04;
pub const DIST_MONITOR: u64 = 0x08;
pub const FUN_TAGS: u64 = 0x10;
pub const DIST_MONITOR_NAME: u64 = 0x20;
pub const NEW_FUN_TAGS: u64 = 0x80;
pub const EXTENDED_PIDS_PORTS: u64 = 0x100;
pub const EXPORT_PTR_TAG: u64 = 0x200;
pub const BIT_BINARIES: u64 = 0x400;
pub const NEW_FLOATS: u64 = 0x800;
pub const UTF8_ATOMS: u64 = 0x1_0000;
pub const MAP_TAG: u64 = 0x2_0000;
pub const BIG_CREATION: u64 = 0x4_0000;
pub const SEND_SENDER: u64 = 0x8_0000;
pub const EXIT_PAYLOAD: u64 = 0x40_0000;
pub const HANDSHAKE_23: u64 = 0x100_0000;
pub const UNLINK_ID: u64 = 0x200_0000;
pub const MANDATORY_25_DIGEST: u64 = 0x400_0000;
pub const SPAWN: u64 = 1 << 32;
pub const NAME_ME: u64 = 1 << 33;
pub const V4_NC: u64 = 1 << 34;

/// What OTP 25 made mandatory (`MANDATORY_DFLAGS_25`), which
/// `MANDATORY_25_DIGEST` stands for.
pub const MANDATORY_25: u64 = EXTENDED_REFERENCES
    | FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | NEW_FUN_TAGS
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | NEW_FLOATS
    | UTF8_ATOMS
    | MAP_TAG
    | BIG_CREATION
    | HANDSHAKE_23;

/// What OTP 26 added to the mandatory set.
pub const MANDATORY_26: u64 = V4_NC | UNLINK_ID;

/// The flags portnode offers a peer. Hidden (no PUBLISHED); no atom cache and
/// no fragments, which it does not implement (nor ALIAS); monitors by pid and
/// by name, so that OTP does not quietly keep monitors local; EXIT and spawn
/// requests with payloads, as OTP 25 sends them.
pub const OFFERED: u64 = MANDATORY_25
    | MANDATORY_25_DIGEST
    | MANDATORY_26
    | DIST_MONITOR
    | DIST_MONITOR_NAME
    | EXIT_PAYLOAD
    | SEND_SENDER
    | SPAWN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_flags_are_otps_bits() {
        // dist.hrl: DFLAG_MANDATORY_25_DIGEST is 16#04000000 (bit 26).
        assert_eq!(MANDATORY_25_DIGEST, 1 << 26);
        assert_ne!(OFFERED & MANDATORY_25_DIGEST, 0);
        // Bit 36 is OTP's internal LOCAL_EXT, never on the wire.
        assert_eq!(OFFERED & (1 << 36), 0);
        // No published bit (hidden), no atom cache, no fragments, no NAME_ME.
        assert_eq!(OFFERED & (0x01 | 0x02 | 0x80_0000 | NAME_ME), 0);
    }
}
