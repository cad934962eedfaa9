%% @doc Running a suite's cases under both containments, each with a
%% portnode of its own (see containment_SUITE for why both): a cgroup per
%% program (as root, or in a delegated subtree), and process groups. After
%% each case, every program the case started must be gone; what is left is
%% killed by its pid and fails the case.
-module(both_modes).
-include_lib("common_test/include/ct.hrl").

-export([groups/1, init_per_group/2, end_per_group/2, node/1, end_per_testcase/1, programs/1]).

%% @doc The two groups, each running `Cases'.
-spec groups([atom()]) -> [{atom(), list(), [atom()]}].
groups(Cases) ->
    [{cgroup, [], Cases}, {process_group, [], Cases}].

-spec init_per_group(atom(), list()) -> list() | {skip, string()}.
init_per_group(Mode, Config) when Mode =:= cgroup; Mode =:= process_group ->
    case Mode =:= cgroup andalso os:cmd("id -u") =/= "0\n" of
        true ->
            {skip, "cgroup mode needs root or a delegated cgroup v2 subtree"};
        false ->
            Pn = own_portnode:start(atom_to_list(Mode), flag(Mode)),
            Mode = maps:get(containment, portnode:info(own_portnode:node(Pn))),
            [{mode, Mode}, {portnode, Pn}, {node, own_portnode:node(Pn)} | Config]
    end;
init_per_group(_Other, Config) ->
    Config.

-spec end_per_group(atom(), list()) -> ok.
end_per_group(Mode, Config) when Mode =:= cgroup; Mode =:= process_group ->
    own_portnode:stop(?config(portnode, Config));
end_per_group(_Other, _Config) ->
    ok.

%% @doc The portnode node of the group.
-spec node(list()) -> node().
node(Config) ->
    own_portnode:node(?config(portnode, Config)).

%% @doc Waits (up to 10 s) for every program of the group's portnode to be
%% gone; kills what is left, by pid, and fails the case if anything was.
%% After a case that failed (and so left what it linked to running, as
%% end_per_testcase runs in its process), what is left is killed at once.
-spec end_per_testcase(list()) -> ok | {fail, term()}.
end_per_testcase(Config) ->
    Wait = case ?config(tc_status, Config) of
               ok -> 10000;
               _ -> 0
           end,
    case os_process:poll(fun() -> programs(Config) =:= [] end, Wait) of
        ok ->
            ok;
        timeout ->
            Left = programs(Config),
            [os:cmd("kill -9 " ++ integer_to_list(P)) || P <- Left],
            case Wait of
                0 -> ok;
                _ -> {fail, {programs_left_running, [{P, comm(P)} || P <- Left]}}
            end
    end.

%% @doc The live processes under the group's portnode that are programs,
%% not portnode's own (its spawner and its watchdog).
-spec programs(list()) -> [integer()].
programs(Config) ->
    Pn = os_process:descendants_of(own_portnode:os_pid(?config(portnode, Config))),
    [P || P <- Pn, not lists:prefix("portnode", comm(P))].

comm(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/comm") of
        {ok, Comm} -> string:trim(binary_to_list(Comm));
        {error, _} -> ""
    end.

flag(cgroup) -> "auto";
flag(process_group) -> "off".
