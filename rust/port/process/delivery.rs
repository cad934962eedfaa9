//! Output to the owner: framed, encoded straight to distribution frames
//! for a remote owner, as long as the owner has room.

use super::*;
use crate::port::relay::Batch;

impl Port {
    /// The most one read may take: one chunk, or for a remote owner what
    /// its connection can queue before its high-water mark, so that a read
    /// never takes the backlog further past the mark than one chunk.
    /// (Binaries only: data as a list takes twice its bytes and more.)
    pub(super) fn read_cap(&self) -> usize {
        match &self.owner_backlog {
            Some(b) if self.settings.binary && self.owner.node != self.me.pid().node => b.headroom().clamp(READ_CHUNK, MAX_READ),
            _ => READ_CHUNK,
        }
    }

    /// Room for `extra` bytes more than are queued (frames encoded, not
    /// queued yet), and for another batch if the owner has a relay.
    pub(super) fn owner_has_room_for(&self, extra: usize) -> bool {
        self.backlog_has_room(extra) && self.relay.as_ref().is_none_or(|r| r.has_room())
    }

    /// Room for `extra` bytes in what a message to the owner waits behind.
    pub(super) fn backlog_has_room(&self, extra: usize) -> bool {
        self.owner_backlog.as_ref().is_none_or(|b| b.has_room_for(extra))
    }

    pub(super) fn set_owner(&mut self, new: Pid) {
        self.owner_backlog = self.me.node().backlog_of(&new);
        self.outbound = OnceCell::new();
        if let Some(relay) = self.relay.as_mut() {
            relay.owner_changed();
        }
        self.owner = new;
    }

    /// Program output as the owner expects it: a binary, or a list of bytes.
    pub(super) fn data(&self, bytes: Vec<u8>) -> Term {
        if self.settings.binary {
            etf::binary(bytes)
        } else {
            etf::byte_list(bytes)
        }
    }

    /// Sends the owner the frames waiting in `out`, checking before each
    /// one that it has room; frames the owner has no room for stay in the buffer.
    pub(super) fn deliver_output(&mut self, out: &mut Output) -> Result<(), Term> {
        // Nothing new to frame: do not scan a partial frame again.
        if !out.fresh && !out.blocked {
            return Ok(());
        }
        out.fresh = false;
        out.blocked = false;
        let used = self.send_frames(out)?;
        out.consume(used);
        if out.blocked {
            return Ok(());
        }
        if out.pipe.is_none() && !out.ended {
            self.last_line = codec::decode_eof(self.settings.framing, &mut out.buf).map(Box::new);
            out.ended = true;
        }
        Ok(())
    }

    /// Sends the frames at the front of `out`'s buffer, checking before
    /// each one that the owner has room (counting what is encoded and not
    /// queued yet); returns the bytes they took up.
    ///
    /// A remote owner's frames are encoded here, and for an owner in its
    /// relay's VM the frames of a read go as batches (see [`super::super::relay`]),
    /// but for a lone frame while nothing is in flight: a reply line goes
    /// straight to the owner, without the relay's hop. A local owner gets terms.
    pub(super) fn send_frames(&mut self, out: &mut Output) -> Result<usize, Term> {
        let outbox = self.me.node().outbox_of(&self.owner).zip(self.outbound());
        let relay = self.relay.as_deref().filter(|r| r.serves(&self.owner) && outbox.is_some());
        let lines = matches!(self.settings.framing, Framing::Line(_));
        let binary = self.settings.binary;
        let mut batch = Vec::new();
        let mut open: Option<Batch> = None;
        // The first frame, held until a second shows it is not alone.
        let mut first: Option<(Kind, std::ops::Range<usize>)> = None;
        let mut pos = 0;
        let result = loop {
            if !self.owner_has_room_for(batch.len()) {
                out.blocked = true;
                break Ok(pos);
            }
            let cut = match codec::next(self.settings.framing, &out.buf[pos..]) {
                Ok(Some(cut)) => cut,
                Ok(None) => break Ok(pos),
                Err(e) => {
                    warn!(port = %self.me.pid(), program = %self.settings.name, error = %e, "program broke its framing");
                    break Err(a("einval"));
                }
            };
            if pos == 0 && cut.payload == (0..out.buf.len()) && !relay.is_some_and(|r| r.busy()) {
                // The whole buffer is one frame (stream output): it goes as it was read.
                self.send_whole(outbox.as_ref(), cut.kind, std::mem::take(&mut out.buf));
                break Ok(0);
            }
            let range = pos + cut.payload.start..pos + cut.payload.end;
            match (&outbox, relay) {
                (Some((outbox, _)), Some(relay)) => {
                    if open.is_none() && first.is_none() && !relay.busy() {
                        first = Some((cut.kind, range));
                    } else {
                        if open.is_none() {
                            open = relay.open(self.me.pid(), &self.owner, lines, &mut batch);
                        }
                        match open.as_mut() {
                            Some(b) => {
                                if let Some((kind, r)) = first.take() {
                                    b.push(kind, binary, &out.buf[r], &mut batch);
                                }
                                b.push(cut.kind, binary, &out.buf[range], &mut batch);
                            }
                            // The pids do not encode (never, for a node name that is an atom).
                            None => {
                                if let Some((kind, r)) = first.take() {
                                    self.deliver(frame_of(kind, out.buf[r].to_vec()));
                                }
                                self.deliver(frame_of(cut.kind, out.buf[range].to_vec()));
                            }
                        }
                        // A batch ends at BATCH bytes or BATCH_FRAMES frames;
                        // the frames encoded go to the connection at BATCH bytes.
                        let full = batch.len() >= BATCH;
                        if full || open.as_ref().is_some_and(Batch::is_full) {
                            if let Some(b) = open.take() {
                                b.close(&mut batch, relay.head_len());
                                relay.sent();
                            }
                            if full {
                                flush(outbox, &mut batch);
                            }
                        }
                    }
                }
                (Some((outbox, outbound)), None) => {
                    outbound.push(cut.kind, &out.buf[range], &mut batch);
                    if batch.len() >= BATCH {
                        flush(outbox, &mut batch);
                    }
                }
                (None, _) => self.deliver(frame_of(cut.kind, out.buf[range].to_vec())),
            }
            pos += cut.used;
        };
        if let Some((outbox, outbound)) = &outbox {
            match (open, relay) {
                (Some(b), Some(relay)) => {
                    b.close(&mut batch, relay.head_len());
                    relay.sent();
                }
                _ => {
                    if let Some((kind, r)) = first {
                        outbound.push(kind, &out.buf[r], &mut batch);
                    }
                }
            }
            flush(outbox, &mut batch);
        }
        result
    }

    /// Sends a frame that is a whole read; a binary goes as its own piece, never copied.
    pub(super) fn send_whole(&self, remote: Option<&(Outbox, &Outbound)>, kind: Kind, bytes: Vec<u8>) {
        match remote {
            Some((outbox, outbound)) if outbound.binary() => {
                let mut head = Vec::with_capacity(128);
                outbound.push_head(kind, bytes.len(), &mut head);
                outbox.send_outgoing(Outgoing::Split { head, payload: bytes });
            }
            Some((outbox, outbound)) => {
                let mut frame = Vec::with_capacity(outbound.frame_len(kind, bytes.len()));
                outbound.push(kind, &bytes, &mut frame);
                flush(outbox, &mut frame);
            }
            None => self.deliver(frame_of(kind, bytes)),
        }
    }

    pub(super) fn deliver(&self, frame: Frame) {
        let data = match frame {
            Frame::Data(bytes) => self.data(bytes),
            Frame::Line { eol, bytes } => tuple(vec![a(if eol { "eol" } else { "noeol" }), self.data(bytes)]),
        };
        self.to_owner(tuple(vec![a("data"), data]));
    }

    /// The program's output has ended and (when asked for) its status is known.
    pub(super) fn output_ended(&mut self, exited: Option<ExitStatus>) -> Next {
        let status = exited.unwrap_or_default();
        if exited.is_some() {
            if let Some(stats) = usage::at_exit(&self.program, self.peak.as_deref(), &self.settings.name, self.os_pid, self.settings.exit_stats) {
                self.to_owner(stats);
            }
        }
        if self.settings.exit_status {
            self.to_owner(child::exit_report(status, self.settings.exit_signal));
        }
        if let Some(frame) = self.last_line.take() {
            self.deliver(*frame);
        }
        if self.settings.eof {
            self.to_owner(a("eof"));
            self.done = true;
            return Next::Continue;
        }
        Next::Exit(a("normal"))
    }
}

/// Queues the frames encoded so far.
pub(super) fn flush(outbox: &Outbox, batch: &mut Vec<u8>) {
    if !batch.is_empty() {
        // A connection that has ended drops them, as a send to it would.
        outbox.send_outgoing(Outgoing::Frames(std::mem::take(batch)));
    }
}

pub(super) fn frame_of(kind: Kind, bytes: Vec<u8>) -> Frame {
    match kind {
        Kind::Data => Frame::Data(bytes),
        Kind::Eol => Frame::Line { eol: true, bytes },
        Kind::Noeol => Frame::Line { eol: false, bytes },
    }
}

pub(super) fn header_len(framing: Framing) -> u64 {
    match framing {
        Framing::Packet(n) => u64::from(n),
        _ => 0,
    }
}
