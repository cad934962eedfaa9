%% @doc Benchmark: what a relay (src/portnode_relay.erl) spends per message,
%% measured alone in this VM, without portnode: decoding a batch, sending
%% each item on to a process that counts them, and the look for the
%% handle's 'EXIT' before each send. Run with `bench/run relay'.
%%
%% The relay's loop (`forward_data/4' there, which it does not export) is
%% written again here. So is the check the relay made before issue 22's
%% seventh round, `process_info(self(), links)' before each item, to
%% compare. Each case is the best of 20 batches of 8,000 six-byte binaries
%% (the packet row's size), in ns per item; a forward counts until the
%% receiver has taken every message. The cases run in a process with one
%% link, as a relay has; the relay's is to the handle, a remote pid, here
%% to a local process. Each forward sends `{Handle, {data, Item}}'. The
%% last two cases run the relay's loop and its receiver on schedulers they
%% are held to (see pinned/4): one, or two, as the VM may place an owner
%% and its relay.
-module(relay_bench).

-export([main/1]).

-define(ITEMS, 8000).
-define(REPEAT, 20).

%% @doc Prints the table. Args: [Runs] (default 3).
-spec main([string()]) -> ok.
main(Args) ->
    Runs = case Args of [] -> 3; [N] -> list_to_integer(N) end,
    %% A handle as the relay knows it: a pid on another node.
    Handle = binary_to_term(<<131, 88, 100, 0, 8, "pn@bench", 1:32, 0:32, 1:32>>),
    Items = [<<"abcdef">> || _ <- lists:seq(1, ?ITEMS)],
    Batch = term_to_binary({'$portnode_relay', self(), data, Items}),
    Built = term_to_binary({'$portnode_relay', self(), msg, [{Handle, {data, I}} || I <- Items]}),
    {_, _, _, Decoded} = binary_to_term(Batch),
    {_, _, _, DecodedBuilt} = binary_to_term(Built),
    Cases = [{"decode a batch (the items)", fun() -> per_item(fun() -> binary_to_term(Batch) end) end},
             {"decode a batch of whole messages (portnode builds them)", fun() -> per_item(fun() -> binary_to_term(Built) end) end},
             {"the link check alone (process_info(self(), links))", fun() -> per_item(fun() -> check_each(Handle, Decoded) end) end},
             {"forward each, no check", fun() -> forwarding(fun(To) -> forward(Handle, To, Decoded) end) end},
             {"forward each, a link check before each (the relay before)", fun() -> forwarding(fun(To) -> forward_checked(Handle, To, Decoded) end) end},
             {"forward each, a fetch before each (the relay)", fun() -> forwarding(fun(To) -> forward_fetched(Handle, To, Decoded, []) end) end},
             {"send whole messages on, no check", fun() -> forwarding(fun(To) -> send_each(To, DecodedBuilt) end) end},
             {"forward each, a fetch before each; relay and receiver on one scheduler", fun() -> pinned(1, 1, Handle, Decoded) end},
             {"forward each, a fetch before each; relay and receiver on two schedulers", fun() -> pinned(1, 2, Handle, Decoded) end}],
    Results = alone(fun() -> [{Name, [F() || _ <- lists:seq(1, Runs)]} || {Name, F} <- Cases] end),
    io:format("~n| per item (ns, ~b items a batch, best of ~b batches), ~b runs | ns |~n|---|---|~n", [?ITEMS, ?REPEAT, Runs]),
    Fmt = fun(na) -> "n/a"; (T) -> io_lib:format("~.1f", [T]) end,
    [io:format("| ~s | ~s |~n", [Name, string:join([Fmt(T) || T <- Ts], ", ")]) || {Name, Ts} <- Results],
    ok.

%% Runs F in a fresh process linked to one other, and returns its result.
alone(F) ->
    Self = self(),
    Peer = spawn(fun() -> receive stop -> ok end end),
    Worker = spawn(fun() -> link(Peer), Self ! {self(), F()} end),
    receive {Worker, Result} -> Peer ! stop, Result end.

per_item(F) ->
    lists:min([timed(F) || _ <- lists:seq(1, ?REPEAT)]) / ?ITEMS.

timed(F) ->
    T0 = erlang:monotonic_time(nanosecond),
    _ = F(),
    erlang:monotonic_time(nanosecond) - T0.

%% Sends a batch on to a fresh counting process, until it has taken all.
forwarding(Send) ->
    lists:min([forward_once(Send) || _ <- lists:seq(1, ?REPEAT)]) / ?ITEMS.

forward_once(Send) ->
    forward_once(Send, []).

forward_once(Send, ToOpts) ->
    Self = self(),
    To = spawn_opt(fun() -> count(Self, ?ITEMS) end, ToOpts),
    timed(fun() -> Send(To), receive {counted, To} -> ok end end).

count(Parent, 0) -> Parent ! {counted, self()};
count(Parent, N) -> receive _ -> count(Parent, N - 1) end.

check_each(Handle, [_ | Rest]) -> _ = linked(Handle), check_each(Handle, Rest);
check_each(_, []) -> ok.

forward(Handle, To, [Item | Rest]) -> To ! {Handle, {data, Item}}, forward(Handle, To, Rest);
forward(_, _, []) -> ok.

%% As the relay: the link is looked at before each send. (Here it is never
%% there, and the send goes on anyway, to time the same work.)
forward_checked(Handle, To, [Item | Rest]) ->
    _ = linked(Handle),
    To ! {Handle, {data, Item}},
    forward_checked(Handle, To, Rest);
forward_checked(_, _, []) -> ok.

%% As the relay (forward_data/4 there): what has arrived is taken before
%% each send.
forward_fetched(Handle, To, [Item | Rest] = Items, New) ->
    receive
        {'EXIT', Handle, _} -> exit(normal);
        Msg -> forward_fetched(Handle, To, Items, [Msg | New])
    after 0 ->
        To ! {Handle, {data, Item}},
        forward_fetched(Handle, To, Rest, New)
    end;
forward_fetched(_, _, [], New) -> New.

%% The relay's loop with the forwarding process and its receiver each held
%% on a scheduler (`{scheduler, N}', an option of spawn_opt that OTP does
%% not document, for this bench only): an owner and its relay are two
%% processes the VM places as it likes, and this shows what each placement
%% costs. "n/a" where the VM has fewer schedulers or no such option.
pinned(RelayOn, ToOn, Handle, Items) ->
    Online = erlang:system_info(schedulers_online),
    Self = self(),
    Run = fun() ->
                  Per = lists:min([forward_once(fun(To) -> forward_fetched(Handle, To, Items, []) end, [{scheduler, ToOn}])
                                   || _ <- lists:seq(1, ?REPEAT)]) / ?ITEMS,
                  Self ! {pinned, self(), Per}
          end,
    try max(RelayOn, ToOn) =< Online andalso spawn_opt(Run, [{scheduler, RelayOn}]) of
        false -> na;
        Pid -> receive {pinned, Pid, Per} -> Per end
    catch error:badarg -> na
    end.

send_each(To, [Msg | Rest]) -> To ! Msg, send_each(To, Rest);
send_each(_, []) -> ok.

linked(Handle) ->
    {links, Links} = process_info(self(), links),
    lists:member(Handle, Links).
