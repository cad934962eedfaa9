%% @doc The distribution link as the running OTP sees it: the handshake
%% flags portnode offers against what this OTP requires and knows, and
%% requests portnode cannot serve (erpc with a fun) answered at once.
%% Runs on every OTP the tests run on (25, 27, 29).
-module(dist_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([offered_flags_fit_this_otp/1, erpc_with_a_fun_raises_notsup_at_once/1,
         a_fun_in_a_message_comes_back_unchanged/1]).

%% OTP's lib/kernel/include/dist.hrl
-define(DFLAG_PUBLISHED, 16#01).
-define(DFLAG_DIST_MONITOR, 16#08).
-define(DFLAG_DIST_MONITOR_NAME, 16#20).
-define(DFLAG_EXIT_PAYLOAD, 16#400000).
-define(DFLAG_FRAGMENTS, 16#800000).
-define(DFLAG_MANDATORY_25_DIGEST, 16#04000000).
-define(DFLAG_SPAWN, (16#01 bsl 32)).
-define(DFLAG_LOCAL_EXT, (16#10 bsl 32)).

%% erts_internal:get_dflags/0, as dist_util reads it (OTP 25 to 29).
-record(erts_dflags, {default, mandatory, addable, rejectable, strict_order}).

all() ->
    [offered_flags_fit_this_otp, erpc_with_a_fun_raises_notsup_at_once,
     a_fun_in_a_message_comes_back_unchanged].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(portnode),
    Config.

end_per_suite(_Config) ->
    application:stop(portnode).

%% @doc portnode offers every flag this OTP makes mandatory, OTP's
%% MANDATORY_25_DIGEST bit (26), no bit this OTP does not know (erl_dist 0.8
%% put the digest at bit 36, OTP's internal LOCAL_EXT), and it is hidden. What
%% this VM offered portnode, and so what the two negotiated, holds spawn and
%% monitors.
offered_flags_fit_this_otp(_Config) ->
    #erts_dflags{default = Default, mandatory = Mandatory, addable = Addable} = erts_internal:get_dflags(),
    #{dist_flags := Ours, peer_dist_flags := Peers} = portnode:info(),
    ct:log("OTP ~s: portnode offers ~.16#, erts default ~.16#, mandatory ~.16#",
           [erlang:system_info(otp_release), Ours, Default, Mandatory]),
    ?assertEqual(0, Mandatory band bnot Ours, missing_mandatory_flags),
    ?assertEqual(0, Ours band bnot (Default bor Addable), flags_this_otp_does_not_know),
    ?assertNotEqual(0, Ours band ?DFLAG_MANDATORY_25_DIGEST),
    ?assertEqual(0, Ours band ?DFLAG_LOCAL_EXT),
    ?assertEqual(0, Ours band (?DFLAG_PUBLISHED bor ?DFLAG_FRAGMENTS)),
    #{node() := Theirs} = Peers,
    Negotiated = Ours band Theirs,
    ct:log("this VM offered ~.16#; negotiated ~.16#", [Theirs, Negotiated]),
    ?assertEqual(0, Mandatory band bnot Negotiated),
    [?assertNotEqual(0, Negotiated band F, F)
     || F <- [?DFLAG_SPAWN, ?DFLAG_DIST_MONITOR, ?DFLAG_DIST_MONITOR_NAME, ?DFLAG_EXIT_PAYLOAD]].

%% @doc erpc:call with a fun (a SPAWN_REQUEST whose arguments hold it) raises
%% notsup at once; the connection stays.
erpc_with_a_fun_raises_notsup_at_once(_Config) ->
    Node = portnode:node(),
    erlang:monitor_node(Node, true),
    T0 = erlang:monotonic_time(millisecond),
    ?assertError({erpc, notsup}, erpc:call(Node, fun() -> ok end, 5000)),
    ?assertError({erpc, notsup}, erpc:call(Node, fun() -> ok end)),
    ?assertError({erpc, notsup}, erpc:call(Node, lists, seq, [1, 3])),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("three refused calls took ~p ms", [Took]),
    ?assert(Took < 1000),
    ?assertEqual(pong, portnode:ping()),
    receive {nodedown, Node} -> ct:fail(connection_dropped) after 0 -> ok end,
    erlang:monitor_node(Node, false).

%% @doc A fun in an ordinary message is kept as an opaque term: the control
%% server's answer to a call it does not know carries it back unchanged.
a_fun_in_a_message_comes_back_unchanged(_Config) ->
    Self = self(),
    F = fun(X) -> {X, Self} end,
    E = fun lists:seq/2,
    ?assertMatch({error, {unknown_call, {echo, F, E}}},
                 gen_server:call({portnode, portnode:node()}, {echo, F, E})),
    ?assertEqual(pong, portnode:ping()).
