%% @doc Runs one port scenario through a port implementation and returns
%% what the owner received, normalized so that a port and a handle compare.
-module(port_scenario).

-export([run/4, open_error/3, merge_stream/1]).

-type impl() :: erlang | portnode.
-type action() :: {command, iodata()} | close | {sleep, non_neg_integer()} | port_close
                | {connect_to_helper} | close_stdin.

%% @doc Opens `PortName' with `Settings' through `Impl', performs `Actions' as
%% the owner, and returns every message about the port until it exits.
-spec run(impl(), term(), list(), [action()]) -> [term()].
run(Impl, PortName, Settings, Actions) ->
    Self = self(),
    {Pid, Ref} = spawn_monitor(fun() -> Self ! {self(), scenario(Impl, PortName, Settings, Actions)} end),
    receive
        {Pid, Result} -> erlang:demonitor(Ref, [flush]), Result;
        {'DOWN', Ref, process, Pid, Reason} -> {scenario_crashed, Reason}
    after 30000 -> exit(Pid, kill), scenario_timeout
    end.

scenario(Impl, PortName, Settings, Actions) ->
    process_flag(trap_exit, true),
    P = Impl:open_port(PortName, Settings),
    Helper = spawn_link(fun() -> helper(self()) end),
    lists:foreach(fun(A) -> act(Impl, P, Helper, A) end, Actions),
    Msgs = collect(P, Helper, []),
    Normal = [normalize(P, M) || M <- Msgs],
    case lists:member(line, Settings) orelse lists:keymember(line, 1, [S || S <- Settings, is_tuple(S)])
         orelse lists:keymember(packet, 1, [S || S <- Settings, is_tuple(S)]) of
        true -> Normal;
        false -> merge_stream(Normal)
    end.

act(_Impl, P, _Helper, {command, Data}) -> P ! {self(), {command, Data}};
act(_Impl, P, _Helper, close) -> P ! {self(), close};
act(_Impl, _P, _Helper, {sleep, Ms}) -> timer:sleep(Ms);
act(Impl, P, _Helper, port_close) -> true = Impl:port_close(P);
act(_Impl, P, Helper, {connect_to_helper}) -> P ! {self(), {connect, Helper}};
act(erlang, P, _Helper, close_stdin) -> P ! {self(), {command, <<>>}};
act(portnode, P, _Helper, close_stdin) -> ok = portnode:close_stdin(P).

%% The helper forwards what it gets, so that a new owner's messages are seen too.
helper(Parent) ->
    receive
        stop -> ok;
        M -> Parent ! {via_helper, M}, helper(Parent)
    end.

collect(P, Helper, Acc) ->
    receive
        {P, _} = M -> collect(P, Helper, [M | Acc]);
        {via_helper, M} -> collect(P, Helper, [{helper, M} | Acc]);
        {'EXIT', P, _} = M -> lists:reverse(trailing(P, [M | Acc]));
        {'EXIT', Helper, _} -> collect(P, Helper, Acc)
    after 3000 ->
        lists:reverse([no_exit_within_3s | Acc])
    end.

%% Messages a port sends after its exit signal ({P, closed}).
trailing(P, Acc) ->
    receive {P, _} = M -> trailing(P, [M | Acc])
    after 200 -> Acc
    end.

normalize(P, Term) when Term =:= P -> port;
normalize(P, T) when is_tuple(T) -> list_to_tuple([normalize(P, E) || E <- tuple_to_list(T)]);
normalize(P, [H | T]) -> [normalize(P, H) | normalize(P, T)];
normalize(_P, T) -> T.

%% @doc Joins consecutive stream data messages: how output is chunked is not part of the protocol.
-spec merge_stream([term()]) -> [term()].
merge_stream([{port, {data, A}}, {port, {data, B}} | Rest]) when is_binary(A) ->
    merge_stream([{port, {data, <<A/binary, B/binary>>}} | Rest]);
merge_stream([{port, {data, A}}, {port, {data, B}} | Rest]) ->
    merge_stream([{port, {data, A ++ B}} | Rest]);
merge_stream([M | Rest]) -> [M | merge_stream(Rest)];
merge_stream([]) -> [].

%% @doc The error `Impl:open_port/2' raises for these arguments, or `no_error'.
-spec open_error(impl(), term(), term()) -> term().
open_error(Impl, PortName, Settings) ->
    try Impl:open_port(PortName, Settings) of
        P -> try Impl:port_close(P) catch error:badarg -> true end, no_error
    catch
        Class:Reason -> {Class, Reason}
    end.
