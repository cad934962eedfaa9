%% @doc A portnode of a test's own, launched as an erts port (so it dies
%% with the test's VM) by a holder process of its own, so that it outlives
%% the process that started it (CT's init_per_group, say) until `stop/1'.
-module(own_portnode).

-export([start/2, start/3, node/1, os_pid/1, stop/1]).

-record(pn, {holder :: pid(), node :: node(), os_pid :: integer()}).

%% @doc Starts `portnode --sname <Name><unique> --cgroup Cgroup', the cookie on its stdin.
-spec start(string(), string()) -> #pn{}.
start(Name, Cgroup) ->
    start(Name, Cgroup, []).

-spec start(string(), string(), [string()]) -> #pn{}.
start(Name, Cgroup, Extra) ->
    Exe = filename:join([code:priv_dir(portnode), "bin", "portnode"]),
    [_, Host] = string:split(atom_to_list(erlang:node()), "@"),
    SName = Name ++ integer_to_list(erlang:unique_integer([positive])),
    Node = list_to_atom(SName ++ "@" ++ Host),
    Args = ["--sname", SName, "--exit-on-stdin-eof", "--cookie-stdin", "--cgroup", Cgroup | Extra],
    Self = self(),
    Holder = spawn(fun() ->
                       Port = open_port({spawn_executable, Exe}, [{args, Args}, {env, [{"PORTNODE_COOKIE", false}]}]),
                       true = port_command(Port, [atom_to_list(erlang:get_cookie()), $\n]),
                       {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                       Self ! {self(), os_pid, OsPid},
                       receive stop -> try port_close(Port) catch error:badarg -> true end end
                   end),
    OsPid = receive {Holder, os_pid, P} -> P after 5000 -> erlang:error(portnode_did_not_start) end,
    ok = wait_pong(Node, 100),
    #pn{holder = Holder, node = Node, os_pid = OsPid}.

-spec node(#pn{}) -> node().
node(#pn{node = Node}) -> Node.

-spec os_pid(#pn{}) -> integer().
os_pid(#pn{os_pid = OsPid}) -> OsPid.

%% @doc Closes its stdin (it shuts down) and waits for its OS process to go.
-spec stop(#pn{}) -> ok.
stop(#pn{holder = Holder, os_pid = OsPid}) ->
    Holder ! stop,
    [] = os_process:wait_gone([OsPid], 10000),
    ok.

wait_pong(_Node, 0) -> timeout;
wait_pong(Node, N) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang -> timer:sleep(100), wait_pong(Node, N - 1)
    end.
