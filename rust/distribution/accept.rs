//! The accepting side of the handshake, written here rather than taken from
//! erl_dist: erl_dist's server sends `alive` and goes straight on to the
//! challenge without reading the initiator's `true`/`false`, which stalls a
//! node that comes back under a name this node still has a connection to.
//!
//! The parsers are pure functions of one handshake message (without its
//! 2-byte length), so they can be fuzzed; [`accept_on`] drives them over any
//! tokio stream and [`Admit`] is asked what to answer a name.

use super::handshake::{HandshakeFailure, PeerInfo};
use erl_dist::DistributionFlags;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A `send_name` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMsg {
    pub flags: u64,
    /// Sent by version 6 (`N`); version 5 (`n`) sends it in the complement.
    pub creation: Option<u32>,
    pub name: String,
}

/// What to answer a peer's name with, as OTP's `recv_name`/`send_status` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// No connection to that name: go on.
    Ok,
    /// A connection to that name is up: ask the peer (`alive`); it answers
    /// `true` when its old connection is dead (a new incarnation, say).
    Alive,
    /// Another handshake with that name is under way: refuse (`nok`).
    Nok,
}

/// Decides how a name is admitted: the node knows who is connected.
pub trait Admit: Sync {
    fn admission(&self, name: &str) -> Admission;
}

/// Names with a handshake under way on the accepting side, so that a
/// duplicate attempt gets `nok` instead of a second connection.
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<HashSet<String>>>);

/// Holds a name in [`Pending`] until dropped.
pub struct PendingGuard {
    set: Pending,
    name: String,
}

impl Pending {
    /// Claims `name`; `None` if a handshake with it is already under way.
    pub fn claim(&self, name: &str) -> Option<PendingGuard> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(name.to_owned()).then(|| PendingGuard { set: self.clone(), name: name.to_owned() })
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.set.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

fn malformed(what: &'static str) -> HandshakeFailure {
    HandshakeFailure::Malformed(what)
}

/// A cursor over one message that never reads past its end.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HandshakeFailure> {
        if self.0.len() < n {
            return Err(malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HandshakeFailure> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, HandshakeFailure> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, HandshakeFailure> {
        let hi = self.u32(what)?;
        Ok((u64::from(hi) << 32) | u64::from(self.u32(what)?))
    }
    fn end(&self, what: &'static str) -> Result<(), HandshakeFailure> {
        if self.0.is_empty() { Ok(()) } else { Err(malformed(what)) }
    }
}

fn node_name(bytes: &[u8]) -> Result<String, HandshakeFailure> {
    let name = std::str::from_utf8(bytes).map_err(|_| malformed("node name is not UTF-8"))?;
    match name.split_once('@') {
        Some((alive, host)) if !alive.is_empty() && !host.is_empty() && name.len() <= 255 * 2 + 1 => Ok(name.to_owned()),
        _ => Err(malformed("node name is not alive@host")),
    }
}

/// Parses `send_name` (`n` version 5 or `N` version 6).
pub fn parse_name(msg: &[u8]) -> Result<NameMsg, HandshakeFailure> {
    let mut b = Bytes(msg);
    match b.take(1, "empty name message")?[0] {
        b'n' => {
            let _version = b.u16("name: version")?;
            let flags = u64::from(b.u32("name: flags")?);
            Ok(NameMsg { flags, creation: None, name: node_name(b.0)? })
        }
        b'N' => {
            let flags = b.u64("name: flags")?;
            let creation = b.u32("name: creation")?;
            let len = b.u16("name: length")? as usize;
            let name = node_name(b.take(len, "name: name")?)?;
            b.end("name: trailing bytes")?;
            Ok(NameMsg { flags, creation: Some(creation), name })
        }
        _ => Err(malformed("name message has an unknown tag")),
    }
}

/// Parses the initiator's answer to `alive`: `true` goes on, `false` aborts.
pub fn parse_alive_answer(msg: &[u8]) -> Result<bool, HandshakeFailure> {
    match msg {
        b"strue" => Ok(true),
        b"sfalse" => Ok(false),
        _ => Err(malformed("answer to alive is neither true nor false")),
    }
}

/// Parses `send_complement` (`c`): the high flags and the creation.
pub fn parse_complement(msg: &[u8]) -> Result<(u32, u32), HandshakeFailure> {
    let mut b = Bytes(msg);
    if b.take(1, "empty complement")?[0] != b'c' {
        return Err(malformed("complement has an unknown tag"));
    }
    let hi = b.u32("complement: flags")?;
    let creation = b.u32("complement: creation")?;
    b.end("complement: trailing bytes")?;
    Ok((hi, creation))
}

/// Parses `send_challenge_reply` (`r`): the peer's challenge and its digest of ours.
pub fn parse_challenge_reply(msg: &[u8]) -> Result<(u32, [u8; 16]), HandshakeFailure> {
    let mut b = Bytes(msg);
    if b.take(1, "empty challenge reply")?[0] != b'r' {
        return Err(malformed("challenge reply has an unknown tag"));
    }
    let challenge = b.u32("challenge reply: challenge")?;
    let mut digest = [0u8; 16];
    digest.copy_from_slice(b.take(16, "challenge reply: digest")?);
    b.end("challenge reply: trailing bytes")?;
    Ok((challenge, digest))
}

/// The digest of `challenge` under `cookie`, as the protocol defines it.
/// Fed to MD5 piecewise: no string holding the cookie is made (and left in
/// freed memory).
pub fn digest(cookie: &str, challenge: u32) -> [u8; 16] {
    let mut md5 = md5::Context::new();
    md5.consume(cookie.as_bytes());
    md5.consume(challenge.to_string().as_bytes());
    md5.finalize().0
}

/// This node, as the accepting side presents itself.
pub struct Me<'a> {
    pub name: &'a str,
    pub creation: u32,
    pub flags: DistributionFlags,
    pub cookie: &'a str,
}

async fn recv<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, HandshakeFailure> {
    let len = s.read_u16().await? as usize;
    let mut msg = vec![0; len];
    s.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> Result<(), HandshakeFailure> {
    let len = u16::try_from(msg.len()).map_err(|_| malformed("handshake message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await?;
    s.flush().await?;
    Ok(())
}

async fn status<S: AsyncWrite + Unpin>(s: &mut S, text: &str) -> Result<(), HandshakeFailure> {
    send(s, format!("s{text}").as_bytes()).await
}

/// Runs the accepting side of the handshake on `s` (no deadline: the caller sets one).
/// `pending` guards against two handshakes with the same name at once.
pub async fn accept_on<S>(s: &mut S, me: &Me<'_>, admit: &dyn Admit, pending: &Pending) -> Result<PeerInfo, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = parse_name(&recv(s).await?)?;
    if name.flags & super::flags::NAME_ME != 0 {
        status(s, "not_allowed").await?;
        return Err(HandshakeFailure::DynamicName);
    }
    if name.flags & super::flags::HANDSHAKE_23 == 0 {
        status(s, "not_allowed").await?;
        return Err(malformed("peer predates OTP 23 (no HANDSHAKE_23)"));
    }
    let Some(_claim) = pending.claim(&name.name) else {
        status(s, "nok").await?;
        return Err(HandshakeFailure::Duplicate(name.name));
    };
    match admit.admission(&name.name) {
        Admission::Ok => status(s, "ok").await?,
        Admission::Nok => {
            status(s, "nok").await?;
            return Err(HandshakeFailure::Duplicate(name.name));
        }
        Admission::Alive => {
            status(s, "alive").await?;
            if !parse_alive_answer(&recv(s).await?)? {
                return Err(HandshakeFailure::AlreadyConnected(name.name));
            }
        }
    }
    let challenge: u32 = rand::random();
    let mut msg = vec![b'N'];
    msg.extend_from_slice(&me.flags.bits().to_be_bytes());
    msg.extend_from_slice(&challenge.to_be_bytes());
    msg.extend_from_slice(&me.creation.to_be_bytes());
    msg.extend_from_slice(&(me.name.len() as u16).to_be_bytes());
    msg.extend_from_slice(me.name.as_bytes());
    send(s, &msg).await?;
    let creation = match name.creation {
        Some(c) => c,
        None => parse_complement(&recv(s).await?)?.1,
    };
    let (peer_challenge, their_digest) = parse_challenge_reply(&recv(s).await?)?;
    if their_digest != digest(me.cookie, challenge) {
        return Err(HandshakeFailure::WrongCookie);
    }
    let mut ack = vec![b'a'];
    ack.extend_from_slice(&digest(me.cookie, peer_challenge));
    send(s, &ack).await?;
    Ok(PeerInfo { name: name.name, creation, flags: name.flags })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_name(name: &str) -> Vec<u8> {
        let mut m = vec![b'N'];
        m.extend_from_slice(&super::super::flags::HANDSHAKE_23.to_be_bytes());
        m.extend_from_slice(&7u32.to_be_bytes());
        m.extend_from_slice(&(name.len() as u16).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
        m
    }

    #[test]
    fn parses_a_version_6_name() {
        let n = parse_name(&v6_name("a@b")).unwrap();
        assert_eq!((n.name.as_str(), n.creation), ("a@b", Some(7)));
    }

    #[test]
    fn rejects_short_and_bad_names_without_panicking() {
        let full = v6_name("a@b");
        for cut in 0..full.len() {
            assert!(parse_name(&full[..cut]).is_err(), "accepted a name cut at {cut}");
        }
        assert!(parse_name(&v6_name("nohost")).is_err());
        assert!(parse_name(&v6_name("@b")).is_err());
        let mut long = v6_name("a@b");
        long.push(0);
        assert!(parse_name(&long).is_err());
        // A length that runs past the end.
        let mut m = v6_name("a@b");
        m[15] = 0xff;
        assert!(parse_name(&m).is_err());
    }

    #[test]
    fn parses_the_answers_to_alive_and_the_reply() {
        assert_eq!(parse_alive_answer(b"strue").unwrap(), true);
        assert_eq!(parse_alive_answer(b"sfalse").unwrap(), false);
        assert!(parse_alive_answer(b"s").is_err());
        let mut r = vec![b'r', 0, 0, 0, 9];
        r.extend_from_slice(&[1; 16]);
        assert_eq!(parse_challenge_reply(&r).unwrap(), (9, [1; 16]));
        assert!(parse_challenge_reply(&r[..20]).is_err());
        assert_eq!(parse_complement(&[b'c', 0, 0, 0, 1, 0, 0, 0, 2]).unwrap(), (1, 2));
    }

    #[test]
    fn a_second_claim_on_a_pending_name_fails_until_the_first_is_dropped() {
        let p = Pending::default();
        let g = p.claim("a@b").unwrap();
        assert!(p.claim("a@b").is_none());
        drop(g);
        assert!(p.claim("a@b").is_some());
    }
}
