//! Output for a remote owner goes out as distribution frames that portnode
//! encodes itself, a stream's read as a piece of its own (never copied),
//! batched with whatever else the connection carries. These tests hold it
//! to every byte, in order, in frames that stay in step with everything
//! else on the same connection, and to nothing left behind when ports
//! close while their programs keep the pipe full.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn streams_arrive_whole_and_in_order_beside_lines_and_calls_on_one_connection() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::connected_to(&home, &pn);
    // Two streams (one fast, one in small writes by a process each), a line port
    // and calls, all at once, to one owner over one connection.
    let out = erl.eval_within(
        "Open = fun(Cmd, Opts) -> {ok, H, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn, Cmd}, Opts}), H end, \
         Fast = Open(\"seq 1 3000000\", [binary, stream, exit_status]), \
         Slow = Open(\"seq 1 300 | xargs -n 1 echo\", [binary, stream, exit_status]), \
         Lines = Open(\"seq 1 20000\", [binary, {line, 64}, exit_status]), \
         Calls = [gen_server:call({portnode, N}, ping) || _ <- lists:seq(1, 50)], \
         Take = fun T(0, Acc) -> Acc; \
                    T(K, {F, S, L} = Acc) -> receive \
                        {Fast, {data, D}} -> T(K, {[F, D], S, L}); {Slow, {data, D}} -> T(K, {F, [S, D], L}); \
                        {Lines, {data, {eol, D}}} -> T(K, {F, S, [D | L]}); \
                        {_, {exit_status, 0}} -> T(K - 1, Acc) \
                    after 20000 -> timeout end end, \
         {F0, S0, L} = Take(3, {[], [], []}), F = iolist_to_binary(F0), S = iolist_to_binary(S0), \
         Lines1 = [integer_to_binary(I) || I <- lists:seq(1, 20000)], \
         Md5 = fun(Cmd) -> string:trim(hd(string:split(os:cmd(Cmd ++ \" | md5sum\"), \" \"))) end, \
         Hex = fun(B) -> string:lowercase(binary_to_list(binary:encode_hex(erlang:md5(B)))) end, \
         {Hex(F) =:= Md5(\"seq 1 3000000\"), byte_size(F), Hex(S) =:= Md5(\"seq 1 300\"), lists:reverse(L) =:= Lines1, lists:usort(Calls)}",
        Duration::from_secs(60),
    );
    assert_eq!(out, "{true,22888896,true,true,[pong]}");
}

/// Descriptors `pid` holds. A process that is gone holds none, and its
/// count proves nothing: that is a failure here.
fn fds(pid: u32) -> usize {
    match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(d) => d.count(),
        Err(e) => panic!("cannot count the descriptors of {pid} (gone?): {e}"),
    }
}

#[test]
fn ports_closed_mid_stream_leave_no_pipe_and_the_connection_in_step() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::connected_to(&home, &pn);
    assert_eq!(erl.eval("gen_server:call({portnode, N}, ping)"), "pong");
    let before = fds(pn.pid());
    // Each port closes while its program keeps the pipe full: mid-stream,
    // with output read and not yet written out.
    let out = erl.eval_within(
        "Run = fun() -> {ok, H, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"cat /dev/zero\"}, [binary, stream]}), \
                receive {H, {data, _}} -> ok end, true = gen_server:call(H, close), H end, \
         Hs = [Run() || _ <- lists:seq(1, 100)], \
         Flush = fun F(K) -> receive {_, {data, _}} -> F(K + 1) after 500 -> K end end, Flush(0), \
         {ok, E, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn, \"echo after\"}, [binary, stream, exit_status]}), \
         R = receive {E, {data, D}} -> D after 5000 -> timeout end, \
         {length(Hs), R, gen_server:call({portnode, N}, ping)}",
        Duration::from_secs(60),
    );
    assert_eq!(out, "{100,<<\"after\\n\">>,pong}");
    wait_for("portnode to hold only the descriptors it held before", Duration::from_secs(5), || fds(pn.pid()) <= before);
}

/// A program may put its end of the pipe in packet mode (`O_DIRECT`, set
/// with `fcntl` at any time): each write is then a packet, and a read
/// returns one, short of what was asked. A short read must not be taken
/// for a drained pipe: the second packet comes at once, not when the
/// program next writes or exits.
#[test]
fn packets_of_a_pipe_in_packet_mode_arrive_at_once() {
    let home = Home::new(COOKIE);
    let pn = Portnode::start(&home, &[]);
    let mut erl = Erl::connected_to(&home, &pn);
    let out = erl.eval_within(
        "Code = \"import fcntl, os, time\\n\
                 fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_DIRECT)\\n\
                 os.write(1, b'a\\\\n')\\nos.write(1, b'b\\\\n')\\ntime.sleep(60)\\n\", \
         {ok, H, _} = gen_server:call({portnode, N}, {open_port, self(), {spawn_executable, os:find_executable(\"python3\")}, [{args, [\"-c\", Code]}, binary, {line, 64}]}), \
         Line = fun() -> receive {H, {data, {eol, L}}} -> L after 2000 -> timeout end end, \
         Got = [Line(), Line()], {Got, gen_server:call(H, close)}",
        Duration::from_secs(30),
    );
    assert_eq!(out, "{[<<\"a\">>,<<\"b\">>],true}");
}
