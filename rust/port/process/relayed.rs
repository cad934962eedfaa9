//! The handle's side of its relay (see [`crate::port::relay`]): its
//! acknowledgements, its loss, and the wait for it before the handle exits.

use super::*;

/// How long an ending handle waits for its relay to forward what it was
/// sent. A relay that is there forwards in moments; one whose VM stopped
/// answering is cut off by the connection's tick well before this.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

impl Port {
    /// True if `pid` is the handle's relay.
    pub(super) fn is_relay(&self, pid: &Pid) -> bool {
        self.relay.as_ref().is_some_and(|r| r.pid() == pid)
    }

    /// The relay has forwarded `n` batches: once it has forwarded them all,
    /// the exit signals that waited for it go.
    pub(super) fn relayed(&mut self, n: u32) -> Next {
        let deferred = match self.relay.as_deref_mut() {
            Some(relay) if relay.acked(n) => relay.take_deferred(),
            _ => Vec::new(),
        };
        for (to, reason) in deferred {
            self.me.exit_signal(&to, reason);
        }
        Next::Continue
    }

    /// Stream output may go by the side channel (see [`super::super::side`]):
    /// for an owner in its relay's VM, as binaries, from a pipe (not a
    /// terminal) whose bytes nothing must see (a readiness line).
    pub(super) fn may_side(&self) -> bool {
        self.settings.framing == Framing::Stream
            && self.settings.binary
            && self.pty.is_none()
            && self.relay.as_ref().is_some_and(|r| r.serves(&self.owner))
            && self.health.as_ref().is_none_or(|h| !h.reads_output())
            && !matches!(self.side.as_deref(), Some(Side::Off))
    }

    /// Offers the relay a side channel; without a listener, there is none.
    pub(super) fn offer_side(&mut self) {
        let Some(relay) = self.relay.as_deref() else { return };
        match super::super::side::offer() {
            Some((path, token, offer)) => {
                let path = etf::binary(path.as_os_str().as_encoded_bytes().to_vec());
                self.me.send(relay.pid(), tuple(vec![a("$portnode_relay_side"), path, etf::binary(token.to_vec())]));
                debug!(port = %self.me.pid(), relay = %relay.pid(), bytes_in = self.bytes_in, "side channel offered");
                self.side = Some(Box::new(Side::Offered(offer)));
            }
            None => self.side = Some(Box::new(Side::Off)),
        }
    }

    /// `n` bytes of output went to the side channel: the relay is told to
    /// forward them, in order with the rest (a batch of its own).
    pub(super) fn spliced(&mut self, n: usize) -> Next {
        self.bytes_in += n as u64;
        let Some(relay) = self.relay.as_deref() else { return Next::Continue };
        self.me.send(relay.pid(), tuple(vec![a("$portnode_relay"), Term::from(self.owner.clone()), a("side"), int(n as i64)]));
        relay.sent();
        Next::Continue
    }

    /// The relay went. With nothing in flight the handle sends directly
    /// from now on; with batches lost, its owner would miss output: the
    /// handle ends with `{relay_down, Reason}`.
    pub(super) fn relay_lost(&mut self, reason: Term) -> Next {
        let Some(mut relay) = self.relay.take() else { return Next::Continue };
        // Its side channel (or the offer of one) goes with it.
        if self.side.is_some() {
            self.side = Some(Box::new(Side::Off));
        }
        for (to, reason) in relay.take_deferred() {
            self.me.exit_signal(&to, reason);
        }
        if relay.busy() {
            warn!(port = %self.me.pid(), relay = %relay.pid(), reason = %etf::brief(&reason, etf::LOGGED_TERM), "the owner's relay went with output in flight");
            return Next::Exit(tuple(vec![a("relay_down"), reason]));
        }
        debug!(port = %self.me.pid(), relay = %relay.pid(), "the owner's relay went; sending directly");
        Next::Continue
    }

    /// The relay has batches to forward.
    pub(super) fn relay_busy(&self) -> bool {
        self.relay.as_ref().is_some_and(|r| r.busy())
    }

    /// Waits until the relay has forwarded everything it was sent (or is
    /// gone), so that the handle's exit signals come after it; returns the
    /// exit reason. Calls made meanwhile are not answered: their callers
    /// hear of the exit. Its caller looks first ([`Port::relay_busy`]):
    /// the wait is boxed, and made only when there is one.
    pub(super) async fn relay_drained(&mut self, reason: Term) -> Term {
        let drained = async {
            while self.relay_busy() {
                match Request::parse(self.me.recv().await) {
                    Request::Relayed(n) => {
                        self.relayed(n);
                    }
                    Request::Exit { from, reason } if self.is_relay(&from) => {
                        if let Next::Exit(lost) = self.relay_lost(reason) {
                            return Some(lost);
                        }
                    }
                    _ => {}
                }
            }
            None
        };
        match tokio::time::timeout(DRAIN_LIMIT, drained).await {
            // The output in flight is lost: that is the handle's exit reason.
            Ok(Some(lost)) => lost,
            Ok(None) => reason,
            Err(_) => {
                warn!(port = %self.me.pid(), "the owner's relay did not forward its output in time");
                reason
            }
        }
    }
}
