//! Distribution control messages: the frames nodes exchange after the handshake.
//!
//! portnode advertises neither the atom cache nor fragments, so every frame
//! is `112` (pass-through) followed by a control tuple and, for some ops, a
//! payload term. This module turns those bytes into [`Control`] values and
//! back; it decodes every op OTP 25 sends, including the ones erl_dist
//! 0.8 gets wrong (SEND_TT, SPAWN_REQUEST with a byte-string argument list).

use crate::etf::{self, as_atom, as_int, as_pid, as_ref, int, tuple, TermError};
use eetf::{Atom, Pid, Reference, Term};

/// The target of a send or monitor: a pid, or a name registered on the node.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcRef {
    Pid(Pid),
    Name(Atom),
}

impl ProcRef {
    fn from_term(term: &Term) -> Result<Self, MessageError> {
        match term {
            Term::Pid(p) => Ok(ProcRef::Pid(p.clone())),
            Term::Atom(a) => Ok(ProcRef::Name(a.clone())),
            _ => Err(MessageError::Field("process")),
        }
    }
    fn to_term(&self) -> Term {
        match self {
            ProcRef::Pid(p) => Term::from(p.clone()),
            ProcRef::Name(a) => Term::from(a.clone()),
        }
    }
}

/// One control message, with its payload where the op has one.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Link { from: Pid, to: Pid },
    Send { to: Pid, msg: Term },
    SendSender { from: Pid, to: Pid, msg: Term },
    RegSend { from: Pid, to: Atom, msg: Term },
    AliasSend { from: Pid, alias: Reference, msg: Term },
    /// EXIT (a link broke): `from` died with `reason`.
    Exit { from: Pid, to: Pid, reason: Term },
    /// EXIT2: `from` called `exit(to, reason)`.
    Exit2 { from: Pid, to: Pid, reason: Term },
    MonitorP { from: Pid, to: ProcRef, reference: Reference },
    DemonitorP { from: Pid, to: ProcRef, reference: Reference },
    MonitorPExit { from: ProcRef, to: Pid, reference: Reference, reason: Term },
    UnlinkId { id: u64, from: Pid, to: Pid },
    UnlinkIdAck { id: u64, from: Pid, to: Pid },
    SpawnRequest { req_id: Reference, from: Pid },
    SpawnReply { req_id: Reference, to: Pid, result: Term },
    GroupLeader,
}

/// Why a frame could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("frame does not start with the pass-through byte (got {0})")]
    NotPassThrough(u8),
    #[error("empty frame")]
    Empty,
    #[error("bad term: {0}")]
    Term(#[from] TermError),
    #[error("control message is not a tuple with an op")]
    NotControl,
    #[error("unknown control op {0}")]
    UnknownOp(i64),
    #[error("control message field {0} is malformed")]
    Field(&'static str),
    #[error("op {0} needs a payload and has none")]
    MissingPayload(i64),
    #[error("{0} bytes left after the message")]
    Trailing(usize),
}

impl Control {
    /// Parses one frame (without its 4-byte length). Its terms are moved
    /// into the message, never copied: a message costs what decoding it
    /// does (see [`crate::etf`]), once.
    pub fn decode(frame: &[u8]) -> Result<Control, MessageError> {
        match frame.first() {
            None => return Err(MessageError::Empty),
            Some(112) => {}
            Some(&b) => return Err(MessageError::NotPassThrough(b)),
        }
        let (ctrl, used) = etf::decode(&frame[1..])?;
        let Term::Tuple(eetf::Tuple { elements: mut f }) = ctrl else { return Err(MessageError::NotControl) };
        let op = f.first().and_then(as_int).ok_or(MessageError::NotControl)?;
        // A spawn request is answered whatever its payload (the argument
        // list) holds: portnode spawns nothing by request, and a caller
        // whose request got no spawn_reply would wait forever (erpc's
        // default timeout is infinity). So its payload is not decoded.
        if matches!(op, 29 | 30) {
            return Ok(Control::SpawnRequest { req_id: as_ref_at(&f, 1)?, from: pid_at(&f, 2, "from")? });
        }
        let rest = &frame[1 + used..];
        let (mut payload, rest) = if rest.is_empty() {
            (None, rest)
        } else {
            let (p, n) = etf::decode(rest)?;
            (Some(p), &rest[n..])
        };
        if !rest.is_empty() {
            return Err(MessageError::Trailing(rest.len()));
        }
        let mut payload = || payload.take().ok_or(MessageError::MissingPayload(op));
        let arity = |f: &[Term], n: usize| if f.len() == n { Ok(()) } else { Err(MessageError::Field("arity")) };
        let msg = match op {
            1 => { arity(&f, 3)?; Control::Link { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")? } }
            2 => { arity(&f, 3)?; Control::Send { to: pid_at(&f, 2, "to")?, msg: payload()? } }
            12 => { arity(&f, 4)?; Control::Send { to: pid_at(&f, 2, "to")?, msg: payload()? } }
            22 | 23 => Control::SendSender { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, msg: payload()? },
            6 | 16 => {
                let to = f.get(3).and_then(as_atom).ok_or(MessageError::Field("name"))?;
                Control::RegSend { from: pid_at(&f, 1, "from")?, to: etf::atom(to), msg: payload()? }
            }
            33 | 34 => Control::AliasSend { from: pid_at(&f, 1, "from")?, alias: as_ref_at(&f, 2)?, msg: payload()? },
            3 => { arity(&f, 4)?; Control::Exit { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, reason: take_at(&mut f, 3, "reason")? } }
            13 => { arity(&f, 5)?; Control::Exit { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, reason: take_at(&mut f, 4, "reason")? } }
            24 | 25 => Control::Exit { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, reason: payload()? },
            8 => { arity(&f, 4)?; Control::Exit2 { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, reason: take_at(&mut f, 3, "reason")? } }
            18 => { arity(&f, 5)?; Control::Exit2 { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, reason: take_at(&mut f, 4, "reason")? } }
            26 | 27 => Control::Exit2 { from: pid_at(&f, 1, "from")?, to: pid_at(&f, 2, "to")?, reason: payload()? },
            19 | 20 => {
                arity(&f, 4)?;
                let (from, reference) = (pid_at(&f, 1, "from")?, as_ref_at(&f, 3)?);
                let to = ProcRef::from_term(f.get(2).ok_or(MessageError::Field("to"))?)?;
                if op == 19 { Control::MonitorP { from, to, reference } } else { Control::DemonitorP { from, to, reference } }
            }
            21 | 28 => {
                let from = ProcRef::from_term(f.get(1).ok_or(MessageError::Field("from"))?)?;
                let (to, reference) = (pid_at(&f, 2, "to")?, as_ref_at(&f, 3)?);
                let reason = if op == 21 { take_at(&mut f, 4, "reason")? } else { payload()? };
                Control::MonitorPExit { from, to, reference, reason }
            }
            35 | 36 => {
                arity(&f, 4)?;
                let id = f.get(1).and_then(as_u64).ok_or(MessageError::Field("id"))?;
                let (from, to) = (pid_at(&f, 2, "from")?, pid_at(&f, 3, "to")?);
                if op == 35 { Control::UnlinkId { id, from, to } } else { Control::UnlinkIdAck { id, from, to } }
            }
            31 | 32 => Control::SpawnReply { req_id: as_ref_at(&f, 1)?, to: pid_at(&f, 2, "to")?, result: take_at(&mut f, 4, "result")? },
            7 => Control::GroupLeader,
            other => return Err(MessageError::UnknownOp(other)),
        };
        Ok(msg)
    }

    /// Roughly the bytes this message takes encoded: what a peer's backlog counts.
    pub fn weight(&self) -> usize {
        const CONTROL: usize = 64;
        match self {
            Control::Send { msg, .. }
            | Control::SendSender { msg, .. }
            | Control::RegSend { msg, .. }
            | Control::AliasSend { msg, .. } => CONTROL + etf::weight(msg),
            Control::Exit { reason, .. } | Control::Exit2 { reason, .. } | Control::MonitorPExit { reason, .. } => {
                CONTROL + etf::weight(reason)
            }
            Control::SpawnReply { result, .. } => CONTROL + etf::weight(result),
            _ => CONTROL,
        }
    }

    /// Appends the frame (4-byte length included) for this message to
    /// `out`. If it cannot be encoded, `out` is left as it was: a frame is
    /// written whole or not at all, never in part (which would put the
    /// stream out of step and make the peer drop the connection).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let encoded = self.encode_frame(out, start);
        if encoded.is_err() {
            out.truncate(start);
        }
        encoded
    }

    fn encode_frame(&self, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
        out.extend_from_slice(&[0, 0, 0, 0, 112]);
        let (ctrl, payload): (Term, Option<&Term>) = match self {
            Control::Link { from, to } => (tuple(vec![int(1), pid(from), pid(to)]), None),
            Control::Send { to, msg } => (tuple(vec![int(2), etf::a(""), pid(to)]), Some(msg)),
            Control::SendSender { from, to, msg } => (tuple(vec![int(22), pid(from), pid(to)]), Some(msg)),
            Control::RegSend { from, to, msg } => {
                (tuple(vec![int(6), pid(from), etf::a(""), Term::from(to.clone())]), Some(msg))
            }
            Control::AliasSend { from, alias, msg } => {
                (tuple(vec![int(33), pid(from), Term::from(alias.clone())]), Some(msg))
            }
            Control::Exit { from, to, reason } => (tuple(vec![int(24), pid(from), pid(to)]), Some(reason)),
            Control::Exit2 { from, to, reason } => (tuple(vec![int(26), pid(from), pid(to)]), Some(reason)),
            Control::MonitorP { from, to, reference } => {
                (tuple(vec![int(19), pid(from), to.to_term(), Term::from(reference.clone())]), None)
            }
            Control::DemonitorP { from, to, reference } => {
                (tuple(vec![int(20), pid(from), to.to_term(), Term::from(reference.clone())]), None)
            }
            Control::MonitorPExit { from, to, reference, reason } => (
                tuple(vec![int(28), from.to_term(), pid(to), Term::from(reference.clone())]),
                Some(reason),
            ),
            Control::UnlinkId { id, from, to } => (tuple(vec![int(35), etf::uint(*id), pid(from), pid(to)]), None),
            Control::UnlinkIdAck { id, from, to } => {
                (tuple(vec![int(36), etf::uint(*id), pid(from), pid(to)]), None)
            }
            Control::SpawnReply { req_id, to, result } => (
                tuple(vec![int(31), Term::from(req_id.clone()), pid(to), int(0), result.clone()]),
                None,
            ),
            // portnode never sends these; encode them as a harmless no-op send.
            Control::SpawnRequest { .. } | Control::GroupLeader => (tuple(vec![int(7)]), None),
        };
        etf::encode_into(&ctrl, out)?;
        if let Some(p) = payload {
            etf::encode_into(p, out)?;
        }
        let len = out.len() - start - 4;
        let len = u32::try_from(len).map_err(|_| EncodeError::TooLarge(len))?;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// Why a message was not encoded (nothing of it is written).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a term does not encode: {0}")]
    Term(#[from] eetf::EncodeError),
    #[error("a frame of {0} bytes is more than its length field can say")]
    TooLarge(usize),
}

fn pid_at(f: &[Term], i: usize, name: &'static str) -> Result<Pid, MessageError> {
    f.get(i).and_then(as_pid).cloned().ok_or(MessageError::Field(name))
}

/// Moves field `i` out of the control tuple (a reason, a result: terms of any size).
fn take_at(f: &mut [Term], i: usize, name: &'static str) -> Result<Term, MessageError> {
    f.get_mut(i).map(etf::take).ok_or(MessageError::Field(name))
}

fn as_ref_at(f: &[Term], i: usize) -> Result<Reference, MessageError> {
    f.get(i).and_then(as_ref).cloned().ok_or(MessageError::Field("ref"))
}

fn pid(p: &Pid) -> Term {
    Term::from(p.clone())
}


fn as_u64(term: &Term) -> Option<u64> {
    match term {
        Term::FixInteger(i) => u64::try_from(i.value).ok(),
        Term::BigInteger(b) => u64::try_from(&b.value).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32) -> Pid {
        Pid::new("a@h", id, 0, 7)
    }

    #[test]
    fn encoded_messages_decode_back() {
        let r = Reference { node: etf::atom("a@h"), id: vec![1, 2, 3], creation: 7 };
        let cases = vec![
            Control::Link { from: p(1), to: p(2) },
            Control::Send { to: p(2), msg: etf::a("hi") },
            Control::RegSend { from: p(1), to: etf::atom("portnode"), msg: int(5) },
            Control::Exit { from: p(1), to: p(2), reason: etf::a("normal") },
            Control::Exit2 { from: p(1), to: p(2), reason: etf::a("kill") },
            Control::MonitorP { from: p(1), to: ProcRef::Name(etf::atom("x")), reference: r.clone() },
            Control::MonitorPExit { from: ProcRef::Pid(p(2)), to: p(1), reference: r.clone(), reason: etf::a("noproc") },
            Control::UnlinkId { id: 1 << 40, from: p(1), to: p(2) },
            Control::UnlinkIdAck { id: 3, from: p(1), to: p(2) },
        ];
        for c in cases {
            let mut out = Vec::new();
            c.encode_into(&mut out).expect("encodes");
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            assert_eq!(len, out.len() - 4);
            assert_eq!(Control::decode(&out[4..]).expect("decodes"), c);
        }
    }

    #[test]
    fn send_tt_takes_the_right_fields() {
        let mut frame = vec![112];
        etf::encode_into(&tuple(vec![int(12), etf::a(""), pid(&p(2)), etf::a("token")]), &mut frame).expect("encodes");
        etf::encode_into(&etf::a("msg"), &mut frame).expect("encodes");
        assert_eq!(Control::decode(&frame).unwrap(), Control::Send { to: p(2), msg: etf::a("msg") });
    }

    #[test]
    fn a_spawn_request_decodes_whatever_its_payload_holds() {
        let r = Reference { node: etf::atom("a@h"), id: vec![1, 2, 3], creation: 7 };
        let mfa = tuple(vec![etf::a("erpc"), etf::a("execute_call"), int(4)]);
        let ctrl = tuple(vec![int(29), Term::from(r.clone()), pid(&p(1)), pid(&p(1)), mfa, Term::from(eetf::List::nil())]);
        // An argument list this node cannot decode (an atom cache reference).
        let mut frame = vec![112];
        etf::encode_into(&ctrl, &mut frame).expect("encodes");
        frame.extend_from_slice(&[131, 82, 0]);
        assert_eq!(Control::decode(&frame).unwrap(), Control::SpawnRequest { req_id: r, from: p(1) });
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(Control::decode(&[]), Err(MessageError::Empty));
        assert_eq!(Control::decode(&[68]), Err(MessageError::NotPassThrough(68)));
        let mut frame = vec![112];
        etf::encode_into(&tuple(vec![int(99)]), &mut frame).expect("encodes");
        assert_eq!(Control::decode(&frame), Err(MessageError::UnknownOp(99)));
        let mut frame = vec![112];
        etf::encode_into(&tuple(vec![int(2), etf::a(""), pid(&p(1))]), &mut frame).expect("encodes");
        assert_eq!(Control::decode(&frame), Err(MessageError::MissingPayload(2)));
    }

    #[test]
    fn a_message_that_does_not_encode_leaves_no_part_of_its_frame() {
        // A payload whose last atom is too long to encode (none a peer sends is).
        let msg = tuple(vec![etf::binary(vec![1; 1000]), etf::a(&"a".repeat(70_000))]);
        let mut out = vec![0, 0, 0, 0];
        let before = out.clone();
        assert!(matches!(Control::Send { to: p(2), msg }.encode_into(&mut out), Err(EncodeError::Term(_))));
        assert_eq!(out, before);
        // The next frame is whole and first.
        Control::Link { from: p(1), to: p(2) }.encode_into(&mut out).expect("encodes");
        assert_eq!(Control::decode(&out[8..]).expect("decodes"), Control::Link { from: p(1), to: p(2) });
    }

    #[test]
    fn a_payload_is_moved_out_of_its_frame_whatever_the_op() {
        // Old-style EXIT (reason in the control tuple) and EXIT with payload alike.
        let mut frame = vec![112];
        etf::encode_into(&tuple(vec![int(3), pid(&p(1)), pid(&p(2)), etf::a("why")]), &mut frame).expect("encodes");
        assert_eq!(Control::decode(&frame).unwrap(), Control::Exit { from: p(1), to: p(2), reason: etf::a("why") });
        let mut frame = vec![112];
        etf::encode_into(&tuple(vec![int(24), pid(&p(1)), pid(&p(2))]), &mut frame).expect("encodes");
        etf::encode_into(&etf::a("why"), &mut frame).expect("encodes");
        assert_eq!(Control::decode(&frame).unwrap(), Control::Exit { from: p(1), to: p(2), reason: etf::a("why") });
    }
}
