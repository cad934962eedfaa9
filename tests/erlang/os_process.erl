%% @doc OS process facts for tests: is a pid alive, which are its children.
-module(os_process).

-export([alive/1, wait_gone/2, zombie_children/1, children_of/1, descendants_of/1, os_pid_of_node/1, poll/2]).

%% @doc True if `OsPid' exists and is not a zombie.
-spec alive(integer()) -> boolean().
alive(OsPid) ->
    case string:trim(os:cmd("ps -o stat= -p " ++ integer_to_list(OsPid))) of
        "" -> false;
        "Z" ++ _ -> false;
        _ -> true
    end.

%% @doc Waits up to `Ms' for every pid in `OsPids' to be gone; returns the ones still alive.
-spec wait_gone([integer()], non_neg_integer()) -> [integer()].
wait_gone(OsPids, Ms) when Ms =< 0 ->
    [P || P <- OsPids, alive(P)];
wait_gone(OsPids, Ms) ->
    case [P || P <- OsPids, alive(P)] of
        [] -> [];
        _ -> timer:sleep(50), wait_gone(OsPids, Ms - 50)
    end.

%% @doc Zombies among the descendants of `OsPid' (there should never be
%% any): portnode's programs are children of its spawner, a child of its.
-spec zombie_children(integer()) -> [string()].
zombie_children(OsPid) ->
    [integer_to_list(P) ++ " Z" || {P, Stat} <- tree(OsPid), hd(Stat) =:= $Z].

%% @doc Live (non-zombie) descendants of `OsPid' (children, their children...), sorted.
-spec descendants_of(integer()) -> [integer()].
descendants_of(OsPid) ->
    lists:sort([P || {P, Stat} <- tree(OsPid), hd(Stat) =/= $Z]).

%% Every descendant of `OsPid', with its state, from one `ps'.
tree(OsPid) ->
    Rows = [case string:lexemes(L, " ") of [P, PP, S | _] -> {list_to_integer(P), list_to_integer(PP), S} end
            || L <- string:split(os:cmd("ps -e -o pid=,ppid=,stat="), "\n", all), string:lexemes(L, " ") =/= []],
    tree([OsPid], Rows, []).

tree([], _Rows, Acc) -> Acc;
tree([Parent | Rest], Rows, Acc) ->
    Kids = [{P, S} || {P, PP, S} <- Rows, PP =:= Parent],
    tree(Rest ++ [P || {P, _} <- Kids], Rows, Kids ++ Acc).

%% @doc Live (non-zombie) children of `OsPid', sorted.
-spec children_of(integer()) -> [integer()].
children_of(OsPid) ->
    Lines = string:split(os:cmd("ps -o pid=,stat= --ppid " ++ integer_to_list(OsPid)), "\n", all),
    lists:sort([list_to_integer(P) || L <- Lines, [P, Stat | _] <- [string:lexemes(L, " ")], hd(Stat) =/= $Z]).

%% @doc The OS pid of the VM of Erlang node `Node'.
-spec os_pid_of_node(node()) -> integer().
os_pid_of_node(Node) ->
    list_to_integer(erpc:call(Node, os, getpid, [])).

%% @doc `ok' once `Done()' is true (checked every 20 ms), `timeout' after `Ms'.
-spec poll(fun(() -> boolean()), integer()) -> ok | timeout.
poll(Done, Ms) when Ms =< 0 ->
    case Done() of true -> ok; false -> timeout end;
poll(Done, Ms) ->
    case Done() of
        true -> ok;
        false -> timer:sleep(20), poll(Done, Ms - 20)
    end.
