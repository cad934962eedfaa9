%% @doc A handle's relay (internal to portnode: nothing here is an API):
%% one small process in the owner's VM, per handle, that turns batches of
%% port messages back into the messages an erts port sends.
%%
%% Why: through portnode, each `{Port, {data, Line}}' is one distribution
%% message, and the owner's VM decodes and schedules each one. A relay
%% lets portnode send one distribution message with the lines of a whole
%% read; the relay, in the owner's VM, sends each as an ordinary local
%% message. `portnode:open_port' (and `open') starts one before it asks
%% for the handle and names it in the request; the handle links to it and
%% says hello. A handle whose owner is on another node than its relay
%% sends directly, as does one whose relay is gone (see below).
%%
%% == Ordering ==
%% The owner must see exactly what an erts port sends, in its order: data,
%% then `exit_status', `eof', `closed', and the handle's `'EXIT'' after the
%% last of them. The argument:
%% <ol>
%% <li>Everything the handle sends to a process in this VM while a batch is
%%     unacknowledged goes through the relay, as a batch (data) or as a
%%     message batch (anything else): the relay forwards batches in the
%%     order it receives them, and Erlang orders messages between one pair
%%     of processes (handle to relay over one connection, relay to owner
%%     locally).</li>
%% <li>The relay acknowledges each batch after it has forwarded all of it
%%     (several at once, when more are waiting).
%%     Only when every batch is acknowledged does the handle send directly
%%     again (a single line, a stream read, a reply), or send a signal
%%     (`badsig', its exit, a monitor's `DOWN'): those go out only after
%%     the relay's local sends were made, and the runtime enqueues a local
%%     send in the receiver's queue as it is made. (Erlang promises order
%%     only per pair of processes; an owner with `message_queue_data'
%%     `off_heap' under heavy contention has OTP's parallel send buffers,
%%     which may merge two senders' messages out of that order.)</li>
%% <li>An exit signal cannot go through a relay (it must come from the
%%     handle), so a handle that is ending waits for its last
%%     acknowledgement before it exits. The one exception is
%%     `exit(Handle, kill)', which ends it at once: batches still here
%%     are dropped, as after a dropped connection (below).</li>
%% </ol>
%%
%% == Stream output by a side channel ==
%% Through the connection, a stream's bytes cost portnode a read and a
%% loopback TCP send, and this VM the distribution's decoding. For an owner
%% on portnode's host, the handle offers this relay a Unix socket
%% (`{'$portnode_relay_side', Path, Token}'): the relay connects and writes
%% the token, and portnode moves the program's output from its pipe to the
%% socket without copying it. The bytes carry no meaning by themselves:
%% the handle announces each run it wrote with a batch, `{'$portnode_relay',
%% Owner, side, Bytes}', and the relay reads that many and sends them as
%% `{Handle, {data, Binary}}' messages of at most 64 KiB (an erts port's
%% largest read), so they are ordered as any batch is. A relay on another
%% host cannot connect, and one that is not offered a socket never has one:
%% the bytes then come in batches or messages, as before. A socket that
%% fails under a batch ends the relay (`side_channel'), and so the handle,
%% as its killing would.
%%
%% == Faults ==
%% <ul>
%% <li>The relay killed: the handle, linked to it, hears. With nothing
%%     unacknowledged, it goes on sending directly. With batches lost, the
%%     owner would miss output, so the handle exits with reason
%%     `{relay_down, Reason}' (its program stopped, as for any exit).</li>
%% <li>The connection to portnode dropped: the owner gets its `'EXIT''
%%     (`noconnection') from the runtime, and this relay drops what it has
%%     not forwarded yet: before each message it takes what has arrived
%%     and ends at the handle's `'EXIT'' (see fetch/2). One message sent as the
%%     signal arrives can still follow the `'EXIT''.</li>
%% <li>The opener gone before the handle said hello (an open that failed
%%     or was never made): the relay exits.</li>
%% <li>The handle gone and its link not there to say so: the relay also
%%     monitors the handle from its hello, and ends at its `'DOWN'' as at
%%     its `'EXIT'' (both come after the handle's last message).</li>
%% </ul>
-module(portnode_relay).

-export([start/0, stop/1]).
-export([init/1, loop/1]).

%% The most a side channel's bytes are read, and sent to the owner, at once.
-define(SIDE_CHUNK, 65536).
%% Batches acknowledged at once at most: half the handle's window (WINDOW
%% in rust/port/relay.rs), so that it never waits for an acknowledgement
%% with batches the relay has forwarded.
-define(ACK_EVERY, 8).

%% @doc Starts a relay for a handle the caller is about to open.
-spec start() -> pid().
start() ->
    %% The socket module, which a side channel needs, loaded beforehand and
    %% aside: loaded by the relay as a stream's offer came, it held the
    %% relay up for about 100 ms (measured in a common_test VM on OTP 29),
    %% and a stream of 24 MB had gone through the connection by then.
    _ = erlang:module_loaded(socket) orelse spawn(code, ensure_loaded, [socket]),
    %% (Its messages on its heap, the default: off it, a run of lines cost
    %% the VM about 10% more CPU, measured with bench/run port.)
    spawn(?MODULE, init, [self()]).

%% @doc Ends a relay whose handle was never opened.
-spec stop(pid()) -> ok.
stop(Relay) ->
    exit(Relay, kill),
    ok.

%% @private
-spec init(pid()) -> no_return().
init(Opener) ->
    process_flag(trap_exit, true),
    Ref = erlang:monitor(process, Opener),
    receive
        {'$portnode_relay_hello', Port} when is_pid(Port) ->
            erlang:demonitor(Ref, [flush]),
            %% The handle's link ends this relay (its 'EXIT', below); the
            %% monitor ends it too if that link is not there. A relay was
            %% once found in a test VM after its handle had gone: waiting,
            %% unlinked, for good. The monitor's 'DOWN' comes after the
            %% handle's last message, as its 'EXIT' does.
            erlang:monitor(process, Port),
            %% Until its first batch, as small as a process gets: many
            %% handles (a sleeping service, a held program) never send one.
            erlang:hibernate(?MODULE, loop, [Port]);
        {'DOWN', Ref, process, Opener, _} ->
            exit(normal)
    end.

%% @private
-spec loop(pid()) -> no_return().
loop(Port) ->
    loop(Port, none, 0, []).

%% Acks: batches forwarded and not yet acknowledged. They are acknowledged
%% together, when nothing more is waiting or ?ACK_EVERY have gone: one
%% `{'$portnode_relayed', N}' for a run of batches, one wake-up of the
%% handle. Only with a side channel, which only a handle that counts such
%% acknowledgements offers; without one, a `'$portnode_relayed'' for each
%% batch, which every portnode binary counts.
%%
%% Waiting: messages taken from the mailbox while a batch was forwarded
%% (see fetch/2), oldest first; they are handled before the mailbox.
loop(Port, Side, Acks, [Msg | Waiting]) ->
    handle(Msg, Port, Side, Acks, Waiting);
loop(Port, Side, 0, []) ->
    receive Msg -> handle(Msg, Port, Side, 0, []) end;
loop(Port, Side, Acks, []) ->
    receive
        Msg -> handle(Msg, Port, Side, Acks, [])
    after 0 ->
        acknowledge(Port, Side, Acks),
        loop(Port, Side, 0, [])
    end.

handle({'$portnode_relay', Dest, side, Bytes}, Port, Side, Acks, Waiting) when is_integer(Bytes), Side =/= none ->
    %% Acknowledged at once: the handle keeps only a few runs in flight.
    New = forward_side(Port, Dest, Side, Bytes, []),
    acknowledge(Port, Side, Acks + 1),
    loop(Port, Side, 0, Waiting ++ lists:reverse(New));
handle({'$portnode_relay', Dest, Kind, Items}, Port, Side, Acks, Waiting) when is_list(Items) ->
    New = forward(Port, Dest, Kind, Items, []),
    forwarded(Port, Side, Acks + 1, Waiting ++ lists:reverse(New));
handle({'$portnode_relay_side', Path, Token}, Port, none, Acks, Waiting) when is_binary(Path), is_binary(Token) ->
    loop(Port, connect(Path, Token), Acks, Waiting);
handle({'$portnode_relay', _Dest, Kind, _}, _Port, _Side, _Acks, _Waiting) ->
    %% A batch this relay cannot forward (a side channel's run with no
    %% socket to read it from): its output is lost, and the handle, which
    %% would wait for its acknowledgement, hears of it now, as of a relay
    %% killed.
    exit({unforwardable_batch, Kind});
handle({'EXIT', Port, _}, Port, _Side, _Acks, _Waiting) ->
    %% After every batch the handle sent: all of them are handled.
    exit(normal);
handle({'DOWN', _, process, Port, _}, Port, _Side, _Acks, _Waiting) ->
    exit(normal);
handle(_, Port, Side, Acks, Waiting) ->
    loop(Port, Side, Acks, Waiting).

%% A batch forwarded, all of it (a broken link ends the relay: fetch/2).
forwarded(Port, Side, Acks, Waiting) when Acks >= ?ACK_EVERY ->
    acknowledge(Port, Side, Acks),
    loop(Port, Side, 0, Waiting);
forwarded(Port, Side, Acks, Waiting) ->
    loop(Port, Side, Acks, Waiting).

acknowledge(Port, none, N) -> [Port ! '$portnode_relayed' || _ <- lists:seq(1, N)];
acknowledge(Port, _Side, N) -> Port ! {'$portnode_relayed', N}.

%% The side channel portnode offers: its socket, or `none' if it cannot be
%% reached from here (another host) and the bytes keep coming in batches.
connect(Path, Token) ->
    %% Whatever goes wrong here (a VM without the socket module, say), the
    %% bytes come as before: the side channel is only a faster way.
    try connect_socket(Path, Token) catch _:_ -> none end.

connect_socket(Path, Token) ->
    case socket:open(local, stream, default) of
        {ok, Socket} ->
            case socket:connect(Socket, #{family => local, path => Path}) of
                ok ->
                    case socket:send(Socket, Token) of
                        ok -> Socket;
                        {error, _} -> socket:close(Socket), none
                    end;
                {error, _} ->
                    socket:close(Socket),
                    none
            end;
        {error, _} ->
            none
    end.

%% Reads the Bytes announced from the side channel and sends them on in
%% pieces of at most ?SIDE_CHUNK, each after a fetch/2 (as forward/5).
%% They are in the socket, or on their way: portnode announces what it
%% has written. Returns what fetch/2 took, newest first.
forward_side(_Port, _Dest, _Side, 0, New) ->
    New;
forward_side(Port, Dest, Side, Bytes, New) ->
    case socket:recv(Side, min(Bytes, ?SIDE_CHUNK)) of
        {ok, Data} ->
            Fetched = fetch(Port, New),
            Dest ! {Port, {data, Data}},
            forward_side(Port, Dest, Side, Bytes - byte_size(Data), Fetched);
        {error, Reason} ->
            %% Output announced is lost: the handle hears of it as of a relay killed.
            exit({side_channel, Reason})
    end.

%% Sends each item as the port message it stands for, each after what has
%% arrived is taken (as fetch/2 does, written out in each loop: a call
%% less per item). Returns what was taken, newest first. One loop per
%% kind, so that nothing is looked at twice per item.
forward(Port, Dest, line, Items, New) -> forward_lines(Port, Dest, Items, New);
forward(Port, Dest, data, Items, New) -> forward_data(Port, Dest, Items, New);
forward(Port, Dest, msg, Items, New) -> forward_msgs(Port, Dest, Items, New).

forward_lines(Port, Dest, [Line | Rest] = Items, New) ->
    receive
        {'EXIT', Port, _} -> exit(normal);
        Msg -> forward_lines(Port, Dest, Items, [Msg | New])
    after 0 ->
        %% A line is a binary or a list (an `{eol, _}'); a piece of a
        %% longer one comes as its tuple (`{noeol, _}').
        Dest ! {Port, {data, if is_tuple(Line) -> Line; true -> {eol, Line} end}},
        forward_lines(Port, Dest, Rest, New)
    end;
forward_lines(_, _, [], New) ->
    New.

forward_data(Port, Dest, [Data | Rest] = Items, New) ->
    receive
        {'EXIT', Port, _} -> exit(normal);
        Msg -> forward_data(Port, Dest, Items, [Msg | New])
    after 0 ->
        Dest ! {Port, {data, Data}},
        forward_data(Port, Dest, Rest, New)
    end;
forward_data(_, _, [], New) ->
    New.

%% Whole messages (`exit_status', `closed', a reply, ...), as they are.
forward_msgs(Port, Dest, [Msg | Rest] = Items, New) ->
    receive
        {'EXIT', Port, _} -> exit(normal);
        Arrived -> forward_msgs(Port, Dest, Items, [Arrived | New])
    after 0 ->
        Dest ! Msg,
        forward_msgs(Port, Dest, Rest, New)
    end;
forward_msgs(_, _, [], New) ->
    New.

%% Takes whatever has arrived into New (newest first), and ends the relay
%% at the handle's 'EXIT': once the link is broken (the connection
%% dropped, or the handle was killed), the owner has had, or is having,
%% its 'EXIT' from the runtime, and nothing may follow it; what this relay
%% holds is dropped. A receive that finds its queue empty handles the
%% signals that have arrived (an exit signal becomes the 'EXIT' here), so,
%% done before each item, at most the item being sent when the signal
%% arrives can follow the owner's 'EXIT'. It is cheap: with nothing
%% waiting, it is an empty receive. In `bench/run relay', forwarding with
%% it costs what forwarding with no check does (148-159 ns an item,
%% against 142-191), where the check the relay made before,
%% process_info(self(), links), made it 200-212.
fetch(Port, New) ->
    receive
        {'EXIT', Port, _} -> exit(normal);
        Msg -> fetch(Port, [Msg | New])
    after 0 ->
        New
    end.

