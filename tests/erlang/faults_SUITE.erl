%% @doc Faults around a bridge-launched portnode: the VM's tick time reaches
%% portnode, a frozen VM loses its programs within that tick time, and a
%% frozen portnode is killed by OS pid and replaced, its services back once.
%% Each case runs the application on a peer VM with `net_ticktime' 4, driven
%% over the peer's stdio (a distribution link to this node, which ticks every
%% 15 s, would time out on the peer's side).
-module(faults_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([bridge_passes_the_vm_ticktime/1, frozen_vm_loses_its_programs/1,
         frozen_portnode_is_replaced_and_services_come_back_once/1]).

-define(TICKTIME, 4).

all() ->
    [bridge_passes_the_vm_ticktime, frozen_vm_loses_its_programs,
     frozen_portnode_is_replaced_and_services_come_back_once].

init_per_testcase(_Case, Config) ->
    Dirs = [filename:dirname(code:which(portnode)), filename:dirname(code:which(?MODULE))],
    Args = ["-kernel", "net_ticktime", integer_to_list(?TICKTIME) | lists:append([["-pa", D] || D <- Dirs])],
    {ok, Peer, Node} = peer:start(#{name => peer:random_name(faults), args => Args,
                                  connection => standard_io}),
    {ok, _} = peer:call(Peer, application, ensure_all_started, [portnode], 30000),
    VmPid = list_to_integer(peer:call(Peer, os, getpid, [])),
    PnPid = peer:call(Peer, gen_server, call, [portnode_bridge, os_pid]),
    [{peer, Peer}, {node, Node}, {vm_pid, VmPid}, {pn_pid, PnPid} | Config].

%% Whatever the case left behind: resume and kill the VM, kill its portnodes
%% (by the OS pids this suite saw, never by name).
end_per_testcase(_Case, Config) ->
    VmPid = ?config(vm_pid, Config),
    Pids = [VmPid | [P || P <- [?config(pn_pid, Config) | get_pids()], is_integer(P)]],
    [os:cmd("kill -CONT " ++ integer_to_list(P) ++ " 2>/dev/null") || P <- Pids],
    try peer:stop(?config(peer, Config)) catch _:_ -> ok end,
    [os:cmd("kill -9 " ++ integer_to_list(P) ++ " 2>/dev/null") || P <- Pids],
    persistent_term:erase({?MODULE, pids}),
    ok.

%% @doc portnode runs with the VM's own net_ticktime, not the default 60.
bridge_passes_the_vm_ticktime(Config) ->
    {ok, Cmdline} = file:read_file("/proc/" ++ integer_to_list(?config(pn_pid, Config)) ++ "/cmdline"),
    Args = string:split(binary_to_list(Cmdline), [0], all),
    ?assertMatch([_, "4" | _], lists:dropwhile(fun(A) -> A =/= "--net-ticktime" end, Args)).

%% @doc A frozen VM's programs stop within its tick time (not portnode's default 60 s).
frozen_vm_loses_its_programs(Config) ->
    Peer = ?config(peer, Config),
    OsPid = on_peer(Peer, fun() ->
                              remote_owner:start(portnode:node(), "sleep 300", self()),
                              receive {remote_os_pid, P} -> P after 10000 -> no_remote_os_pid end
                          end),
    ?assert(os_process:alive(OsPid)),
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -STOP " ++ integer_to_list(?config(vm_pid, Config))),
    ?assertEqual([], os_process:wait_gone([OsPid], 3 * ?TICKTIME * 1000)),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("frozen VM (net_ticktime ~b s): its program stopped after ~b ms", [?TICKTIME, Took]),
    ?assert(Took < 2 * ?TICKTIME * 1000).

%% @doc portnode frozen: the VM sees nodedown within its tick time, the
%% bridge kills the frozen portnode by OS pid and starts a new one, the old
%% program is gone and the service is back exactly once.
frozen_portnode_is_replaced_and_services_come_back_once(Config) ->
    Peer = ?config(peer, Config),
    OldPn = ?config(pn_pid, Config),
    Sup = on_peer(Peer, fun start_services/0),
    OldProgram = service_os_pid(Peer, Sup),
    ?assert(os_process:alive(OldProgram)),
    DownAfter = on_peer(Peer, fun() -> freeze_and_wait_nodedown(OldPn) end),
    ct:log("frozen portnode: nodedown on the VM after ~p ms", [DownAfter]),
    ?assert(is_integer(DownAfter) andalso DownAfter =< 2 * ?TICKTIME * 1000),
    ?assertEqual([], os_process:wait_gone([OldPn], 10000)),
    ?assertEqual([], os_process:wait_gone([OldProgram], 5000)),
    NewPn = wait_value(fun() -> try peer:call(Peer, gen_server, call, [portnode_bridge, os_pid]) catch _:_ -> none end end,
                       fun(P) -> is_integer(P) andalso P =/= OldPn end, 20000),
    put_pids([NewPn]),
    NewProgram = wait_value(fun() -> try service_os_pid(Peer, Sup) catch _:_ -> none end end,
                            fun(P) -> is_integer(P) andalso P =/= OldProgram end, 20000),
    %% Exactly once: one program under the new portnode, and it stays the same.
    timer:sleep(2000),
    ?assertEqual(NewProgram, service_os_pid(Peer, Sup)),
    Sleepers = [P || P <- os_process:descendants_of(NewPn), comm(P) =:= "sleep"],
    ?assertEqual([NewProgram], Sleepers),
    ct:log("portnode ~b replaced by ~b; service program ~b replaced by ~b", [OldPn, NewPn, OldProgram, NewProgram]).

%%% Internal functions

%% Runs on the peer: a supervisor with one service, not linked to the caller.
start_services() ->
    Child = portnode:service(svc, {spawn, "sleep 300"}, [{output, ignore}]),
    {ok, Sup} = supervisor:start_link(erlang_sup, #{strategy => one_for_one, intensity => 10, period => 10,
                                                    children => [Child]}),
    unlink(Sup),
    Sup.

service_os_pid(Peer, Sup) ->
    [{svc, Pid, worker, _}] = peer:call(Peer, supervisor, which_children, [Sup]),
    true = is_pid(Pid),
    peer:call(Peer, portnode_service, os_pid, [Pid]).

%% Runs on the peer: freezes portnode (SIGSTOP to its OS pid) and returns
%% how long the VM took to see nodedown.
freeze_and_wait_nodedown(PnPid) ->
    Node = portnode:node(),
    true = monitor_node(Node, true),
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -STOP " ++ integer_to_list(PnPid)),
    receive {nodedown, Node} -> erlang:monotonic_time(millisecond) - T0
    after 3 * ?TICKTIME * 1000 -> no_nodedown
    end.

on_peer(Peer, Fun) ->
    peer:call(Peer, erlang, apply, [Fun, []], 30000).

wait_value(Get, Good, Ms) ->
    Value = Get(),
    case Good(Value) of
        true -> Value;
        false when Ms =< 0 -> ct:fail({no_good_value, Value});
        false -> timer:sleep(100), wait_value(Get, Good, Ms - 100)
    end.

comm(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/comm") of
        {ok, C} -> string:trim(binary_to_list(C));
        _ -> ""
    end.

%% OS pids a case started later than init_per_testcase, for end_per_testcase
%% (which runs in another process).
put_pids(Pids) -> persistent_term:put({?MODULE, pids}, Pids).
get_pids() -> persistent_term:get({?MODULE, pids}, []).
