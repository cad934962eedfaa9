%% @doc Batched delivery through the owner's relay (src/portnode_relay.erl):
%% the owner sees exactly what an erts port sends, in its order, under load
%% and under faults: data, then `exit_status', `eof', `closed', `connected',
%% the reply to a close, and the handle's `'EXIT'' after the last of them;
%% the relay killed, with output in flight or not; the connection dropped
%% mid-batch; and an owner in a VM without the portnode application.
%% Stream output for an owner on portnode's host goes by the side channel
%% (a Unix socket the relay reads): the same bytes in order, and the same
%% faults.
%% Each case runs against a portnode of its own.
-module(relay_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [lines_then_status_then_exit, batches_end_at_512_frames, lines_as_lists_in_order, small_packets_in_order,
     eof_then_closed_and_nothing_after, port_close_returns_after_the_last_line,
     connect_hands_over_in_order, killed_relay_with_output_in_flight_ends_the_handle,
     killed_relay_while_idle_the_handle_goes_on, dropped_connection_mid_batch,
     owner_without_the_application_gets_direct_messages, a_failed_open_leaves_no_relay,
     stream_by_the_side_channel_in_order, side_channel_port_close_returns_after_the_last_byte,
     side_channel_relay_killed_ends_the_handle, side_channel_relay_killed_while_idle,
     side_channels_leave_no_fds].

init_per_testcase(_Case, Config) ->
    Pn = own_portnode:start("relay", "auto"),
    [{pn, Pn}, {node, own_portnode:node(Pn)} | Config].

%% Trapping exits: a handle still linked to this process must not end it
%% (with `noconnection') as its portnode goes.
end_per_testcase(_Case, Config) ->
    process_flag(trap_exit, true),
    own_portnode:stop(?config(pn, Config)).

-define(SEQ, "/usr/bin/seq").

%% @doc 300,000 lines in many batches: every line in order, then the exit
%% status, then the handle's 'EXIT' (the owner traps exits); nothing else.
lines_then_status_then_exit(Config) ->
    process_flag(trap_exit, true),
    N = 300000,
    H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ},
                           [{args, ["1", integer_to_list(N)]}, {line, 80}, binary, exit_status]),
    {Lines, Rest} = numbered_lines(H, 1, 20000),
    ?assertEqual(N, Lines),
    ?assertEqual([{H, {exit_status, 0}}, {'EXIT', H, normal}], Rest),
    ?assertEqual([], after_end(H, 300)).

%% @doc Short lines come in batches of at most 512 (BATCH_FRAMES in
%% rust/port/relay.rs: the batches in flight, decoded on the relay's heap,
%% must stay small enough for the cache; see docs/performance.md), many
%% of them, and every line in order.
batches_end_at_512_frames(Config) ->
    N = 200000,
    H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ},
                           [{args, ["1", integer_to_list(N)]}, {line, 80}, binary, exit_status]),
    %% The relay's batches from here on (the first may have gone already),
    %% counted by a tracer of their own: out of this mailbox, where the
    %% lines are received selectively.
    Relay = relay_of(H),
    Tracer = spawn_link(fun() -> traced_batches(Relay, line, []) end),
    erlang:trace(Relay, true, ['receive', {tracer, Tracer}]),
    {Lines, [{H, {exit_status, 0}} | _]} = numbered_lines(H, 1, 20000),
    ?assertEqual(N, Lines),
    Tracer ! {collected, self()},
    Sizes = receive {Tracer, S} -> [length(Items) || Items <- S] after 20000 -> ct:fail(no_sizes) end,
    %% Counted first: with no batch seen, lists:min/1 below would fail without saying so.
    ?assert(length(Sizes) >= 100),
    ct:pal("~b batches seen, ~b to ~b lines each", [length(Sizes), lists:min(Sizes), lists:max(Sizes)]),
    ?assert(lists:max(Sizes) =< 512).

%% Collects what each batch of kind `Kind' (`line', `side', ...) that the
%% relay receives (as traced) carries, until asked for them: a line
%% batch's items, a side-channel run's byte count.
traced_batches(Relay, Kind, Batches) ->
    receive
        {trace, Relay, 'receive', {'$portnode_relay', _, Kind, Carried}} -> traced_batches(Relay, Kind, [Carried | Batches]);
        {trace, Relay, 'receive', _} -> traced_batches(Relay, Kind, Batches);
        {collected, From} -> From ! {self(), Batches}
    end.

%% @doc Lines as lists (no `binary'), with a piece of a long line as
%% `noeol': the same messages erts sends for the same output, in order.
lines_as_lists_in_order(Config) ->
    Node = ?config(node, Config),
    Script = "seq 1 50000; seq -s '' 1 120; seq 50001 100000",
    Settings = [{args, ["-c", Script]}, {line, 100}, exit_status],
    %% The messages, less the handle (a port on one side, a pid on the other).
    Erts = [M || {_, M} <- all_messages(erlang:open_port({spawn_executable, "/bin/sh"}, Settings))],
    Pn = [M || {_, M} <- all_messages(portnode:open_port(Node, {spawn_executable, "/bin/sh"}, Settings))],
    ?assert(length(Erts) > 100000),
    ?assert(lists:member({data, {noeol, lists:sublist(lists:append([integer_to_list(I) || I <- lists:seq(1, 120)]), 100)}}, Erts)),
    ?assertEqual(Erts, Pn).

%% @doc 100,000 small `{packet, 2}' packets from Python: in order, then the status.
small_packets_in_order(Config) ->
    Python = os:find_executable("python3"),
    Code = "import sys,struct\nw=sys.stdout.buffer\nfor i in range(1,100001):\n"
           "    b=str(i).encode(); w.write(struct.pack('>H',len(b))+b)\nw.flush()\n",
    H = portnode:open_port(?config(node, Config), {spawn_executable, Python},
                           [{args, ["-c", Code]}, {packet, 2}, binary, exit_status]),
    ?assertEqual({100000, {exit_status, 0}}, packets(H, 1)).

%% @doc With `eof': lines, status, eof; the handle stays open; a close by
%% message gets `{H, closed}' after its 'EXIT', and nothing after.
eof_then_closed_and_nothing_after(Config) ->
    process_flag(trap_exit, true),
    N = 100000,
    H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ},
                           [{args, ["1", integer_to_list(N)]}, {line, 80}, binary, exit_status, eof]),
    {N, [{H, {exit_status, 0}}, {H, eof}]} = numbered_lines(H, 1, 500),
    H ! {self(), close},
    ?assertEqual([{'EXIT', H, normal}, {H, closed}], after_end(H, 1000)).

%% @doc portnode:port_close while output flows: when it returns, every
%% line the program was read for is in the mailbox, in order; none after.
port_close_returns_after_the_last_line(Config) ->
    H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ},
                           [{args, ["1", "1000000000"]}, {line, 80}, binary]),
    wait_for_line(H, 50000),
    true = portnode:port_close(H),
    Queued = mailbox(H),
    ct:log("~b lines in the mailbox when port_close returned", [length(Queued)]),
    ?assert(lists:all(fun({P, {data, {eol, _}}}) -> P =:= H; (_) -> false end, Queued)),
    Numbers = [binary_to_integer(L) || {_, {data, {eol, L}}} <- Queued],
    ?assertEqual(lists:seq(50001, 50000 + length(Numbers)), Numbers),
    ?assertEqual([], after_end(H, 500)).

%% @doc The owner hands the handle over mid-stream (`{Owner, {connect, New}}'): its lines, then
%% `{H, connected}', last; the new owner's lines go on from the next number.
connect_hands_over_in_order(Config) ->
    Self = self(),
    New = spawn_link(fun() -> Self ! {new_owner, collect_until_exit_status([])} end),
    H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ},
                           [{args, ["1", "400000"]}, {line, 80}, binary, exit_status]),
    wait_for_line(H, 20000),
    H ! {self(), {connect, New}},
    Old = old_owner_messages(H, []),
    ?assertEqual({H, connected}, lists:last(Old)),
    OldNumbers = [binary_to_integer(L) || {_, {data, {eol, L}}} <- Old],
    ?assertEqual(lists:seq(20001, 20000 + length(OldNumbers)), OldNumbers),
    NewMsgs = receive {new_owner, Ms} -> Ms after 30000 -> ct:fail(new_owner_timeout) end,
    NewNumbers = [binary_to_integer(L) || {_, {data, {eol, L}}} <- NewMsgs],
    ?assertEqual(lists:seq(20001 + length(OldNumbers), 400000), NewNumbers),
    ?assertEqual({H, {exit_status, 0}}, lists:last(NewMsgs)).

%% @doc The relay killed while output floods through it: the handle ends
%% with `{relay_down, killed}' after an unbroken run of lines, its program
%% is stopped, and nothing comes after the 'EXIT'.
killed_relay_with_output_in_flight_ends_the_handle(Config) ->
    process_flag(trap_exit, true),
    {H, OsPid} = portnode:open(?config(node, Config), {spawn_executable, ?SEQ},
                               [{args, ["1", "1000000000"]}, {line, 80}, binary]),
    wait_for_line(H, 100000),
    %% Held, the relay keeps the batches the handle sends it: they are in flight.
    Relay = relay_of(H),
    erlang:suspend_process(Relay),
    timer:sleep(300),
    exit(Relay, kill),
    {_Last, Rest} = numbered_lines(H, 100001, 5000),
    ?assertEqual([{'EXIT', H, {relay_down, killed}}], Rest),
    ?assertEqual([], after_end(H, 300)),
    ?assertEqual([], os_process:wait_gone([OsPid], 10000)).

%% @doc The relay killed while nothing is in flight: the handle goes on,
%% sending directly; its links are the owner's alone, as erts reports.
killed_relay_while_idle_the_handle_goes_on(Config) ->
    H = portnode:open_port(?config(node, Config), {spawn_executable, "/bin/cat"}, [{line, 80}, binary]),
    true = portnode:port_command(H, <<"one\n">>),
    ?assertEqual({H, {data, {eol, <<"one">>}}}, next(H)),
    ?assertEqual({links, [self()]}, portnode:port_info(H, links)),
    Relay = relay_of(H),
    Ref = monitor(process, Relay),
    exit(Relay, kill),
    receive {'DOWN', Ref, process, Relay, killed} -> ok after 5000 -> ct:fail(relay_not_down) end,
    true = portnode:port_command(H, [lists:duplicate(200, <<"x\n">>), <<"two\n">>]),
    [?assertEqual({H, {data, {eol, <<"x">>}}}, next(H)) || _ <- lists:seq(1, 200)],
    ?assertEqual({H, {data, {eol, <<"two">>}}}, next(H)),
    true = portnode:port_close(H).

%% @doc The connection to portnode dropped mid-stream: an unbroken run of
%% lines, then `{'EXIT', H, noconnection}', and no line after it but the
%% one the relay may have been sending then.
dropped_connection_mid_batch(Config) ->
    process_flag(trap_exit, true),
    Node = ?config(node, Config),
    {H, OsPid} = portnode:open(Node, {spawn_executable, ?SEQ}, [{args, ["1", "1000000000"]}, {line, 80}, binary]),
    wait_for_line(H, 100000),
    %% Held, the relay keeps batches that arrived before the drop: it must
    %% not forward them once the connection is gone.
    Relay = relay_of(H),
    erlang:suspend_process(Relay),
    timer:sleep(300),
    true = erlang:disconnect_node(Node),
    %% The 'EXIT' is in the mailbox now; what the relay forwards would come after it.
    timer:sleep(1000),
    erlang:resume_process(Relay),
    {Last, Rest} = numbered_lines(H, 100001, 5000),
    ?assertEqual([{'EXIT', H, noconnection}], Rest),
    %% At most the one line the relay was sending as the signal came (if
    %% it was held right then), and the next in order.
    Next = integer_to_binary(Last + 1),
    ?assertMatch(L when L =:= [] orelse L =:= [{H, {data, {eol, Next}}}], after_end(H, 500)),
    %% portnode stops the program of an owner it lost.
    ?assertEqual([], os_process:wait_gone([OsPid], 10000)),
    pong = net_adm:ping(Node).

%% @doc An owner on a node that does not run portnode's code (a bare peer)
%% gets its lines as direct messages, every one, in order.
owner_without_the_application_gets_direct_messages(Config) ->
    {ok, Peer, PeerNode} = peer:start(#{name => peer:random_name(relay_bare)}),
    try
        ?assertEqual(non_existing, erpc:call(PeerNode, code, which, [portnode_relay])),
        %% portnode answers connections; the bare VM makes this one.
        pong = erpc:call(PeerNode, net_adm, ping, [?config(node, Config)]),
        %% This suite's code only, for the owner's fun.
        {?MODULE, Bin, File} = code:get_object_code(?MODULE),
        {module, ?MODULE} = erpc:call(PeerNode, code, load_binary, [?MODULE, File, Bin]),
        Self = self(),
        Counter = erlang:spawn(PeerNode, fun() -> receive {go, H} -> Self ! {counted, count_in_order(H, 1)} end end),
        H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ},
                               [{args, ["1", "200000"]}, {line, 80}, binary, exit_status]),
        H ! {self(), {connect, Counter}},
        Counter ! {go, H},
        %% The lines this VM's relay forwarded before the connect are this owner's.
        Mine = old_owner_messages(H, []),
        MineCount = length(Mine) - 1,
        ?assertEqual(lists:seq(1, MineCount), [binary_to_integer(L) || {_, {data, {eol, L}}} <- Mine]),
        receive
            {counted, Result} -> ?assertEqual({MineCount + 1, 200000, {exit_status, 0}}, Result)
        after 60000 -> ct:fail(counter_timeout)
        end
    after
        peer:stop(Peer)
    end.

%% @doc An open that fails (a bad argument) leaves no relay behind.
a_failed_open_leaves_no_relay(Config) ->
    Before = relays(),
    ?assertError(badarg, portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ}, [{line, -1}])),
    ?assertError(enoent, portnode:open(?config(node, Config), {spawn_executable, "/nonexistent/x"}, [])),
    timer:sleep(100),
    ?assertEqual(Before, relays()).

%% @doc A stream of 24 MB goes by the side channel (the relay holds a
%% socket while it flows): every byte, in order, then the exit status, then
%% the 'EXIT'; and the bytes are the ones an erts port reads.
stream_by_the_side_channel_in_order(Config) ->
    process_flag(trap_exit, true),
    Args = ["1", "3200000"],
    Erts = iolist_to_binary([D || {_, {data, D}} <- all_messages(erlang:open_port({spawn_executable, ?SEQ}, [{args, Args}, binary, stream, exit_status]))]),
    H = portnode:open_port(?config(node, Config), {spawn_executable, ?SEQ}, [{args, Args}, binary, stream, exit_status]),
    %% The side channel's bytes, as the handle announced them to the relay,
    %% counted by a tracer of the relay's batches (once the relay is gone,
    %% its socket's counters are too: a sample taken as the data arrives
    %% misses the runs read after the last sample).
    Relay = relay_of(H),
    Counter = spawn_link(fun() -> traced_batches(Relay, side, []) end),
    erlang:trace(Relay, true, ['receive', {tracer, Counter}]),
    {Bytes, Rest} = stream_bytes(H, [], 0),
    Delivered = erlang:trace_delivered(Relay),
    receive {trace_delivered, Relay, Delivered} -> ok after 20000 -> ct:fail(no_trace_delivered) end,
    Counter ! {collected, self()},
    SideBytes = receive {Counter, Runs} -> lists:sum(Runs) after 20000 -> ct:fail(no_side_total) end,
    ?assertEqual(byte_size(Erts), byte_size(Bytes)),
    ?assert(Bytes =:= Erts),
    ?assertEqual([{H, {exit_status, 0}}, {'EXIT', H, normal}], Rest),
    %% Most of it came by the side channel (the first reads, before the
    %% relay has connected, by the distribution connection; and any before
    %% the tracer was set).
    ct:log("~b of ~b bytes by the side channel", [SideBytes, byte_size(Bytes)]),
    ?assert(SideBytes > byte_size(Bytes) div 2),
    ?assertEqual([], after_end(H, 300)).

%% @doc portnode:port_close while a stream flows by the side channel: when
%% it returns, nothing more comes; the relay and the program are gone.
side_channel_port_close_returns_after_the_last_byte(Config) ->
    {H, OsPid} = portnode:open(?config(node, Config), {spawn_executable, "/bin/cat"}, [{args, ["/dev/zero"]}, binary, stream]),
    Relay = relay_of(H),
    wait_for_bytes(H, 50000000),
    ?assert(side_bytes(Relay) > 0),
    true = portnode:port_close(H),
    Queued = mailbox(H),
    ?assert(lists:all(fun({P, {data, D}}) -> P =:= H andalso is_binary(D); (_) -> false end, Queued)),
    ?assertEqual([], after_end(H, 500)),
    ?assertEqual([], os_process:wait_gone([OsPid], 10000)),
    Ref = monitor(process, Relay),
    receive {'DOWN', Ref, process, Relay, _} -> ok after 5000 -> ct:fail(relay_still_there) end.

%% @doc The relay killed while it holds side-channel batches: the handle
%% ends with `{relay_down, killed}', its program is stopped, nothing after.
side_channel_relay_killed_ends_the_handle(Config) ->
    process_flag(trap_exit, true),
    {H, OsPid} = portnode:open(?config(node, Config), {spawn_executable, "/bin/cat"}, [{args, ["/dev/zero"]}, binary, stream]),
    Relay = relay_of(H),
    wait_for_bytes(H, 50000000),
    %% Bytes come by the side channel, and stop with the relay held.
    ?assert(side_bytes(Relay) > 0),
    erlang:suspend_process(Relay),
    timer:sleep(300),
    exit(Relay, kill),
    ?assertEqual({'EXIT', H, {relay_down, killed}}, skip_data(H)),
    ?assertEqual([], after_end(H, 300)),
    ?assertEqual([], os_process:wait_gone([OsPid], 10000)).

%% @doc The relay killed after a stream went by its side channel, with
%% nothing in flight: the handle goes on (through the connection), and
%% portnode closes its end of the socket at once, not at the port's end.
side_channel_relay_killed_while_idle(Config) ->
    process_flag(trap_exit, true),
    OsPid = own_portnode:os_pid(?config(pn, Config)),
    Fds = fun() -> length(filelib:wildcard("*", "/proc/" ++ integer_to_list(OsPid) ++ "/fd")) end,
    H = portnode:open_port(?config(node, Config), {spawn_executable, "/bin/sh"},
                           [{args, ["-c", "head -c 20000000 /dev/zero; read x; echo done"]}, binary, stream]),
    Relay = relay_of(H),
    wait_for_bytes(H, 20000000),
    ?assert(side_bytes(Relay) > 0),
    %% Its last acknowledgement on its way back.
    timer:sleep(300),
    With = Fds(),
    Ref = monitor(process, Relay),
    exit(Relay, kill),
    receive {'DOWN', Ref, process, Relay, killed} -> ok after 5000 -> ct:fail(relay_not_down) end,
    ?assertEqual(ok, os_process:poll(fun() -> Fds() =< With - 1 end, 5000)),
    ?assertEqual([], mailbox(H) ++ [X || {'EXIT', P, _} = X <- [receive M -> M after 0 -> none end], P =:= H]),
    true = portnode:port_command(H, <<"\n">>),
    ?assertEqual({H, {data, <<"done\n">>}}, next(H)),
    %% The program has ended, and with it the handle.
    ?assertEqual([{'EXIT', H, normal}], after_end(H, 2000)).

%% @doc Twenty streams by side channels, each closed or ended: portnode
%% holds as many fds after as before (a socket, a token and an offer each).
side_channels_leave_no_fds(Config) ->
    OsPid = own_portnode:os_pid(?config(pn, Config)),
    Fds = fun() -> length(filelib:wildcard("*", "/proc/" ++ integer_to_list(OsPid) ++ "/fd")) end,
    %% The listener's socket is made at the first offer. Counted once that
    %% stream's handle is gone (its relay exits with it).
    side_stream(?config(node, Config), "1000000"),
    no_relays_left(),
    Before = Fds(),
    [side_stream(?config(node, Config), "1000000") || _ <- lists:seq(1, 10)],
    [begin
         {H, _} = portnode:open(?config(node, Config), {spawn_executable, "/bin/cat"}, [{args, ["/dev/zero"]}, binary, stream]),
         wait_for_bytes(H, 5000000),
         true = portnode:port_close(H),
         _ = mailbox(H)
     end || _ <- lists:seq(1, 10)],
    no_relays_left(),
    %% No more than before (a program's cleanup may still have held one then).
    Settled = os_process:poll(fun() -> Fds() =< Before end, 5000),
    ?assertEqual({ok, true}, {Settled, Fds() =< Before}).

%%% Helpers

%% The bytes of a stream up to its status, and what came after.
stream_bytes(H, Acc, N) ->
    receive
        {H, {data, D}} -> stream_bytes(H, [D | Acc], N + byte_size(D));
        {H, {exit_status, _}} = S -> {iolist_to_binary(lists:reverse(Acc)), [S | ends(H, 5000)]};
        {H, Other} -> ct:fail({unexpected, Other})
    after 20000 -> ct:fail({no_data_after, N})
    end.

%% Bytes the relay has read from its side channel (0 without one, or once
%% it is gone).
side_bytes(Relay) ->
    try socket:which_sockets(Relay) of
        [Socket] ->
            try socket:info(Socket) of
                #{counters := #{read_byte := Read}} -> Read;
                _ -> 0
            catch _:_ -> 0
            end;
        _ -> 0
    catch _:_ -> 0
    end.

wait_for_bytes(H, N) when N =< 0 -> H;
wait_for_bytes(H, N) ->
    receive {H, {data, D}} -> wait_for_bytes(H, N - byte_size(D)) after 20000 -> ct:fail({no_data, N}) end.

%% The first message from or about `H' that is not data.
skip_data(H) ->
    receive
        {H, {data, _}} -> skip_data(H);
        {H, _} = M -> M;
        {'EXIT', H, _} = X -> X
    after 20000 -> ct:fail(no_end)
    end.

%% A stream of `seq 1 Last' read to its end (large enough for a side channel).
side_stream(Node, Last) ->
    H = portnode:open_port(Node, {spawn_executable, ?SEQ}, [{args, ["1", Last]}, binary, stream, exit_status]),
    all_messages(H).


%% Lines numbered from `I' on: how many arrived, unbroken, and the
%% messages after the last (up to the 'EXIT' or `eof', whichever ends it).
numbered_lines(H, I, Timeout) ->
    receive
        {H, {data, {eol, L}}} ->
            case binary_to_integer(L) of
                I -> numbered_lines(H, I + 1, Timeout);
                Other -> ct:fail({out_of_order, expected, I, got, Other})
            end;
        {H, {exit_status, _}} = S -> {I - 1, [S | ends(H, Timeout)]};
        {H, eof} = E -> {I - 1, [E]};
        {'EXIT', H, _} = X -> {I - 1, [X]};
        {H, Other} -> ct:fail({unexpected, Other})
    after Timeout -> ct:fail({no_line, I})
    end.

ends(H, Timeout) ->
    receive
        {H, eof} = E -> [E];
        {'EXIT', H, _} = X -> [X];
        {H, _} = M -> ct:fail({after_status, M})
    after Timeout -> []
    end.

%% Anything from or about `H' that comes within `Ms'.
after_end(H, Ms) ->
    receive
        {H, _} = M -> [M | after_end(H, Ms)];
        {'EXIT', H, _} = M -> [M | after_end(H, Ms)]
    after Ms -> []
    end.

%% What is in the mailbox from `H' now.
mailbox(H) ->
    receive {H, _} = M -> [M | mailbox(H)] after 0 -> [] end.

all_messages(P) ->
    receive
        {P, {exit_status, _}} = S -> [S];
        {P, _} = M -> [M | all_messages(P)]
    after 20000 -> ct:fail(timeout)
    end.

packets(H, I) ->
    receive
        {H, {data, D}} ->
            case binary_to_integer(D) of
                I -> packets(H, I + 1);
                Other -> ct:fail({out_of_order, I, Other})
            end;
        {H, {exit_status, _} = S} -> {I - 1, S}
    after 20000 -> ct:fail({no_packet, I})
    end.

wait_for_line(H, N) ->
    receive
        {H, {data, {eol, L}}} ->
            case binary_to_integer(L) of
                N -> ok;
                _ -> wait_for_line(H, N)
            end
    after 20000 -> ct:fail({no_line, N})
    end.

next(H) ->
    receive {H, _} = M -> M after 5000 -> ct:fail(no_message) end.

collect_until_exit_status(Acc) ->
    receive
        {_, {exit_status, _}} = S -> lists:reverse([S | Acc]);
        {_, {data, _}} = M -> collect_until_exit_status([M | Acc])
    after 30000 -> lists:reverse(Acc)
    end.

%% The old owner's messages after a connect, up to `{H, connected}'.
old_owner_messages(H, Acc) ->
    receive
        {H, connected} = C -> lists:reverse([C | Acc]);
        {H, _} = M -> old_owner_messages(H, [M | Acc])
    after 30000 -> ct:fail(no_connected)
    end.

%% On a bare peer: lines from `I' on, in order; {First, Last, Status}.
count_in_order(H, I) ->
    receive
        {H, {data, {eol, L}}} -> count_in_order(H, binary_to_integer(L), binary_to_integer(L));
        {H, {exit_status, _} = S} -> {I, none, S}
    after 30000 -> timeout
    end.
count_in_order(H, First, Last) ->
    receive
        {H, {data, {eol, L}}} ->
            case binary_to_integer(L) of
                N when N =:= Last + 1 -> count_in_order(H, First, N);
                N -> {out_of_order, Last, N}
            end;
        {H, {exit_status, _} = S} -> {First, Last, S}
    after 30000 -> timeout
    end.

%% The relay of handle `H': the relay process linked to it.
relay_of(H) ->
    [Relay] = [R || R <- relays(), lists:member(H, element(2, process_info(R, links)))],
    Relay.

%% Waits until every relay in this VM is gone (each goes with its handle);
%% if one stays, fails naming what each is doing and what it is linked to.
%% (A relay left for good once was not slow: it had lost its link, which
%% its monitor of the handle now makes up for.)
no_relays_left() ->
    case os_process:poll(fun() -> relays() =:= [] end, 20000) of
        ok -> ok;
        _ -> ct:fail({relays_left, [relay_state(R) || R <- relays()]})
    end.

%% What a relay is doing, what waits in its mailbox (the first few), and
%% whether each handle it is linked to is still open.
relay_state(R) ->
    case process_info(R, [current_stacktrace, links, message_queue_len, messages]) of
        undefined ->
            {R, gone};
        Info ->
            {messages, Queued} = lists:keyfind(messages, 1, Info),
            {links, Links} = lists:keyfind(links, 1, Info),
            Handles = [{L, try portnode:port_info(L, os_pid) catch C:E -> {C, E} end} || L <- Links, is_pid(L), node(L) =/= node()],
            {R, lists:keydelete(messages, 1, Info) ++ [{first_messages, lists:sublist(Queued, 5)}, {handles, Handles}]}
    end.

relays() ->
    lists:sort([P || P <- processes(), process_info(P, initial_call) =:= {initial_call, {portnode_relay, init, 1}}]).
