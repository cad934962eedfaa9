//! What a port is asked: the port protocol's messages, and the calls
//! behind the `portnode` API functions.

use super::*;

impl Port {
    /// Frames `data` for the program and queues it.
    pub(super) fn write(&mut self, data: &Term) -> Written {
        let mut bytes = Vec::new();
        if etf::iodata(data, &mut bytes).is_none() || !self.settings.output {
            return Written::Bad;
        }
        let Ok(framed) = codec::encode(self.settings.framing, bytes) else { return Written::TooLarge };
        self.bytes_out += framed.len() as u64 - header_len(self.settings.framing);
        self.stdin.queue(framed);
        Written::Queued
    }

    pub(super) fn handle(&mut self, request: Request) -> Next {
        match request {
            Request::Call(call, request) => self.call(call, request),
            Request::Relayed(n) if self.relay.is_some() => self.relayed(n),
            Request::Exit { from, reason } if self.is_relay(&from) => self.relay_lost(reason),
            // The port message protocol names the owner (erts checks the pid in the message, not the sender).
            Request::Close { from } if from == self.owner => {
                // erts sends `{Port, closed}` after the port's exit signal.
                let closed = tuple(vec![self.handle_pid(), a("closed")]);
                self.me.after_exit(&self.owner, closed);
                Next::Exit(a("normal"))
            }
            Request::Command { from, data } if from == self.owner => self.command(&data),
            Request::Connect { from, new_owner } if from == self.owner => {
                let old = self.owner.clone();
                self.set_owner(new_owner.clone());
                self.me.link(&new_owner);
                self.send_to(&old, tuple(vec![self.handle_pid(), a("connected")]));
                Next::Continue
            }
            Request::PortCommand(data) => self.command(&data),
            Request::Stop(grace) => Stop::asked(grace, None),
            Request::Exit { from, reason } => {
                // A port closes when its owner exits, for any reason, and when
                // any other linked process exits abnormally.
                if from == self.owner || etf::as_atom(&reason) != Some("normal") {
                    Next::Exit(reason)
                } else {
                    Next::Continue
                }
            }
            // As erts: port protocol naming another process than the owner,
            // and any message that is not port protocol, get the owner an
            // exit signal `badsig` (which ends an owner that does not trap
            // exits, and so the port); the port itself stays open.
            Request::BadProtocol { from } | Request::Close { from } | Request::Command { from, .. } | Request::Connect { from, .. } => {
                debug!(port = %self.me.pid(), from = %from, "port protocol that is bad or names another process: badsig");
                self.badsig()
            }
            Request::NotProtocol(msg) => {
                debug!(port = %self.me.pid(), message = %crate::etf::brief(&msg, crate::etf::LOGGED_TERM), "not port protocol: badsig");
                self.badsig()
            }
            Request::BadStop | Request::Relayed(_) => self.badsig(),
        }
    }

    /// What erts does with a bad message to a port: `badsig` to the owner.
    pub(super) fn badsig(&mut self) -> Next {
        let owner = self.owner.clone();
        self.exit_signal(&owner, a("badsig"));
        Next::Continue
    }

    /// Data for the program by message: what is not iodata (or has no way
    /// in) is a bad message (`badsig` to the owner), as for a port.
    /// A packet too large for its header ends it with `einval`.
    pub(super) fn command(&mut self, data: &Term) -> Next {
        match self.write(data) {
            Written::Queued => Next::Continue,
            Written::Bad => self.badsig(),
            Written::TooLarge => Next::Exit(a("einval")),
        }
    }

    /// The calls behind the `portnode` API functions.
    pub(super) fn call(&mut self, call: Call, request: CallRequest) -> Next {
        let reply = match request {
            CallRequest::Close => {
                self.reply(&call, a("true"));
                return Next::Exit(a("normal"));
            }
            CallRequest::OsPid => int(i64::from(self.os_pid)),
            CallRequest::KillTimeout => int(self.settings.kill_timeout.as_millis() as i64),
            CallRequest::CloseStdin => {
                if self.pty.is_some() {
                    // A terminal's input ends as a user ends it: Ctrl-D.
                    self.stdin.queue(vec![crate::port::pty::EOF]);
                }
                self.stdin.close();
                a("ok")
            }
            CallRequest::Winsz(Some(size)) => match self.pty.as_ref().map(|fd| crate::port::pty::resize(std::os::fd::AsRawFd::as_raw_fd(fd), size)) {
                Some(Ok(())) => a("ok"),
                _ => a("badarg"),
            },
            CallRequest::Winsz(None) => a("badarg"),
            CallRequest::Stats { full } => usage::stats(&self.program, self.peak.as_deref(), full),
            CallRequest::Info => {
                let items = ["name", "links", "id", "connected", "input", "output", "os_pid"];
                etf::list(items.iter().map(|i| tuple(vec![a(i), self.info(i)])).collect())
            }
            CallRequest::InfoItem(item) => {
                let value = etf::as_atom(&item).map(|i| self.info(i)).unwrap_or_else(|| a("badarg"));
                tuple(vec![item, value])
            }
            CallRequest::Connect(new) => {
                self.set_owner(new.clone());
                self.me.link(&new);
                a("true")
            }
            CallRequest::Stop(grace) => return Stop::asked(grace, Some(call)),
            CallRequest::BadStop => a("badarg"),
            CallRequest::Command(data) => match self.write(&data) {
                Written::Queued => a("true"),
                Written::Bad => a("badarg"),
                Written::TooLarge => return self.too_large(call, a("true")),
            },
            CallRequest::FlowCommand { data, mode } => {
                if mode == FlowMode::NoSuspend && self.stdin.busy() {
                    a("busy")
                } else {
                    match self.write(&data) {
                        Written::Bad => a("badarg"),
                        Written::TooLarge => return self.too_large(call, crate::port::stdin::credit_reply()),
                        Written::Queued => {
                            // Answered now if the port is not busy (or forced), else once it drains.
                            if mode == FlowMode::Force {
                                self.reply(&call, crate::port::stdin::credit_reply());
                            } else if let Some(call) = self.stdin.answer_when_not_busy(call) {
                                self.reply(&call, crate::port::stdin::credit_reply());
                            }
                            return Next::Continue;
                        }
                    }
                }
            }
            CallRequest::Kill(Some(n)) if self.program.signal(n) => a("ok"),
            CallRequest::Kill(Some(_)) => tuple(vec![a("error"), a("not_running")]),
            CallRequest::Kill(None) => tuple(vec![a("error"), a("badarg")]),
            CallRequest::Unknown(request) => tuple(vec![a("error"), tuple(vec![a("unknown_call"), request])]),
        };
        self.reply(&call, reply);
        Next::Continue
    }

    /// As `erlang:port_command/2` on a packet too large for its header: it
    /// returns, and the port exits with `einval`.
    pub(super) fn too_large(&self, call: Call, reply: Term) -> Next {
        self.reply(&call, reply);
        Next::Exit(a("einval"))
    }

    pub(super) fn info(&self, item: &str) -> Term {
        match item {
            "name" => etf::list(self.settings.name.chars().map(|c| int(i64::from(c as u32))).collect()),
            // Not its relay: that link is portnode's, not the owner's (erts has no such thing).
            "links" => etf::list(self.me.node().links_of(self.me.pid()).into_iter().filter(|p| !self.is_relay(p)).map(Term::from).collect()),
            "id" => int(i64::from(self.me.pid().id)),
            "connected" => Term::from(self.owner.clone()),
            "input" => int(self.bytes_in as i64),
            "output" => int(self.bytes_out as i64),
            "os_pid" => int(i64::from(self.os_pid)),
            _ => a("undefined"),
        }
    }
}
