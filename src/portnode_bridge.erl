%% @doc The bridge: owns this Erlang node's portnode.
%%
%% By default it launches `priv/bin/portnode' as a port of its own, with a
%% node name derived from this node's, the cookie written to its stdin
%% (`--cookie-stdin': never in argv or in its environment, so not in
%% `/proc/<pid>/environ' either) and `--exit-on-stdin-eof', so the program
%% dies with this VM. The application env `cgroup' (`auto', `off' or a
%% cgroup v2 directory) is passed as `--cgroup'. It
%% waits until portnode answers, then monitors the node: if portnode goes
%% down, the bridge stops and its supervisor restarts it. Lines that
%% portnode logs are forwarded to `logger'.
%%
%% With the application env `{node, Node}' it attaches to a portnode that
%% runs on its own (on another machine, say) instead of launching one.
-module(portnode_bridge).
-behaviour(gen_server).
-compile({no_auto_import, [node/0]}).

%% API
-export([start_link/0, node/0, start_env/1]).
%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(state, {node :: node() | undefined,
                port :: port() | undefined,
                os_pid :: non_neg_integer() | undefined}).

-define(NODE_KEY, {?MODULE, node}).
%% {Node, Start}: the portnode this bridge launched, and what portnode:open_port
%% needs of the environment it started with (see start_env/1).
-define(LAUNCHED_KEY, {?MODULE, launched}).
%% What portnode's lines carry for a filter to select them: `log' (its own
%% lines) or `program_stderr'. No logger domain: OTP's default handler
%% drops every event whose domain is not `[otp]' or `[otp, sasl]', so a
%% program's stderr would not show in a plain Erlang VM.
-define(LOG_META(Kind), #{portnode => Kind}).

%%% API

%% @doc Starts the bridge, registered as `portnode_bridge'. Returns once portnode answers.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc The portnode node this Erlang node uses by default. While the bridge
%% is restarting (portnode died or froze and a new one is starting), waits
%% for the new node, up to the `startup_timeout' env, so that a service
%% restarted meanwhile starts once, on the new node, instead of failing
%% until its supervisor gives up.
-spec node() -> node().
node() ->
    wait_node(deadline(timeout())).

wait_node(Deadline) ->
    Node = persistent_term:get(?NODE_KEY, undefined),
    Up = Node =/= undefined andalso lists:member(Node, nodes(hidden)),
    Waiting = whereis(portnode_sup) =/= undefined andalso erlang:monotonic_time(millisecond) < Deadline,
    if
        Up -> Node;
        Waiting -> receive after 20 -> wait_node(Deadline) end;
        Node =/= undefined -> Node;
        true -> erlang:error({portnode_not_ready, "the portnode application is not running"})
    end.

%% @doc If `Node' is the portnode this bridge launched: the environment it
%% started with (a map), the VM's `os:env()' at that moment, how the
%% two differ (the changes that make a program's environment the VM's),
%% and the VM's OS pid (portnode reads the VM's working directory from
%% `/proc/<pid>/cwd' when it starts a program). For any other node
%% `undefined' (see `portnode:open_port/3').
-spec start_env(node()) -> {#{string() => string()}, [{string(), string()}], [{string(), string()}], pos_integer()} | undefined.
start_env(Node) ->
    case persistent_term:get(?LAUNCHED_KEY, undefined) of
        {Node, Start} -> Start;
        _ -> undefined
    end.

%%% gen_server

%% Connecting is done here, not in handle_continue: once the application has
%% started, portnode is usable. It is bounded by the `startup_timeout' env.
-spec init([]) -> {ok, #state{}} | {stop, term()}.
init([]) ->
    process_flag(trap_exit, true),
    case erlang:is_alive() of
        false -> {stop, {not_distributed, "start Erlang with -sname or -name to use portnode"}};
        true -> connect(application:get_env(portnode, node), #state{})
    end.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call(node, _From, State = #state{node = Node}) ->
    {reply, Node, State};
handle_call(os_pid, _From, State = #state{os_pid = OsPid}) ->
    {reply, OsPid, State};
handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}} | {stop, term(), #state{}}.
handle_info({Port, {data, {_, Line}}}, State = #state{port = Port}) ->
    log_line(Line),
    {noreply, State};
handle_info({Port, {exit_status, Status}}, State = #state{port = Port}) ->
    {stop, {portnode_exited, Status}, State#state{port = undefined}};
handle_info({nodedown, Node}, State = #state{node = Node}) ->
    {stop, {portnode_down, Node}, State};
handle_info({'EXIT', Port, Reason}, State = #state{port = Port}) ->
    {stop, {portnode_port_exit, Reason}, State#state{port = undefined}};
handle_info(_Msg, State) ->
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{node = Node, port = Port, os_pid = OsPid}) ->
    persistent_term:erase(?NODE_KEY),
    persistent_term:erase(?LAUNCHED_KEY),
    case OsPid of
        undefined -> ok;
        _ ->
            %% Closing stdin makes portnode shut down: it stops its programs and
            %% leaves the cluster. Wait for that, bounded, then make sure.
            close_port(Port),
            wait_gone(Node, OsPid, 5000)
    end.

%%% Internal functions

connect({ok, Node}, State) when is_atom(Node) ->
    case wait_pong(Node, deadline(timeout())) of
        ok -> up(Node, State);
        timeout -> {stop, {portnode_unreachable, Node}}
    end;
connect(undefined, State) ->
    Exe = executable(),
    Node = portnode_name(),
    Args = [name_flag(), atom_to_list(Node), "--cookie-stdin", "--exit-on-stdin-eof",
            "--log-level", log_level(), "--cgroup", cgroup(),
            "--net-ticktime", integer_to_list(net_ticktime())],
    Unset = ["PORTNODE_COOKIE", "RUST_LOG"],
    %% os:env/0, not os:getenv/0: half its cost (49 against 105 us here),
    %% and each open compares it again.
    Raw = os:env(),
    Env = maps:from_list([{K, V} || {K, V} <- Raw, not lists:member(K, Unset)]),
    Changes = [{K, V} || {K, V} <- Raw, lists:member(K, Unset)],
    persistent_term:put(?LAUNCHED_KEY, {Node, {Env, Raw, Changes, list_to_integer(os:getpid())}}),
    Port = erlang:open_port({spawn_executable, Exe},
                            [{args, Args},
                             {env, [{K, false} || K <- Unset]},
                             {line, 4096}, binary, exit_status, use_stdio, stderr_to_stdout, hide]),
    true = erlang:port_command(Port, [atom_to_list(erlang:get_cookie()), $\n]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    State1 = State#state{port = Port, os_pid = OsPid},
    case wait_pong(Node, deadline(timeout())) of
        ok -> up(Node, State1);
        timeout ->
            terminate(timeout, State1),
            {stop, {portnode_did_not_connect, Node}}
    end.

up(Node, State) ->
    true = erlang:monitor_node(Node, true),
    persistent_term:put(?NODE_KEY, Node),
    logger:info("portnode ~s is up", [Node], ?LOG_META(log)),
    {ok, State#state{node = Node}}.

executable() ->
    case code:priv_dir(portnode) of
        {error, bad_name} -> erlang:error({portnode_priv_dir_missing, "is the portnode application in the code path?"});
        Priv ->
            Exe = filename:join([Priv, "bin", "portnode"]),
            case filelib:is_regular(Exe) of
                true -> Exe;
                false -> erlang:error({portnode_binary_missing, Exe, "build it with `rebar3 compile`"})
            end
    end.

%% A name unique to this Erlang node: `<alive>_portnode@<host>'.
portnode_name() ->
    [Alive, Host] = string:split(atom_to_list(erlang:node()), "@"),
    list_to_atom(Alive ++ "_portnode@" ++ Host).

name_flag() ->
    case net_kernel:longnames() of
        true -> "--name";
        false -> "--sname"
    end.

%% portnode logs at the level this node's logger shows (it has no `notice'),
%% but not below `info' unless the application env `log_level' asks: Elixir
%% sets the primary level to `debug' by default.
log_level() ->
    Level = case application:get_env(portnode, log_level) of
                {ok, Asked} -> Asked;
                undefined ->
                    case logger:get_primary_config() of
                        #{level := L} when L =:= debug; L =:= all -> info;
                        #{level := L} -> L
                    end
            end,
    case Level of
        _ when Level =:= debug; Level =:= all -> "debug";
        info -> "info";
        _ when Level =:= notice; Level =:= warning -> "warn";
        _ -> "error"
    end.

%% This VM's tick time, so that portnode drops a frozen VM (and stops its
%% programs) as soon as this VM would drop a frozen peer, not after 60 s.
net_ticktime() ->
    case net_kernel:get_net_ticktime() of
        {ongoing_change_to, T} -> T;
        T when is_integer(T) -> T
    end.

timeout() ->
    application:get_env(portnode, startup_timeout, 15000).

cgroup() ->
    case application:get_env(portnode, cgroup, auto) of
        auto -> "auto";
        off -> "off";
        Dir when is_list(Dir); is_binary(Dir) -> unicode:characters_to_list(Dir)
    end.

deadline(Ms) ->
    erlang:monotonic_time(millisecond) + Ms.

wait_pong(Node, Deadline) ->
    poll(fun() -> net_adm:ping(Node) =:= pong end, 50, Deadline).

%% The port is closed already when portnode exited first.
close_port(undefined) -> ok;
close_port(Port) ->
    try erlang:port_close(Port) catch error:badarg -> true end,
    ok.

wait_gone(Node, OsPid, Ms) ->
    Deadline = deadline(Ms),
    Connected = Node =/= undefined andalso lists:member(Node, nodes(hidden)),
    Wait = case Connected of true -> Ms; false -> 0 end,
    receive
        {nodedown, Node} when Connected -> ok
    after Wait ->
        ok
    end,
    %% nodedown comes before portnode's last steps (leaving epmd, exiting):
    %% wait for the process itself, by its own OS pid (never by name). Not
    %% connected (it died or never came up): give stdin EOF a moment.
    case wait_exit(OsPid, case Connected of true -> Deadline; false -> deadline(200) end) of
        ok ->
            ok;
        timeout when Connected ->
            logger:warning("portnode ~s did not stop within ~b ms; killing os pid ~b", [Node, Ms, OsPid]),
            os:cmd("kill -9 " ++ integer_to_list(OsPid)),
            ok;
        timeout ->
            os:cmd("kill -9 " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
            ok
    end.

%% `ok' once OS process `OsPid' has exited (its parent, the VM's
%% erl_child_setup, reaps it at once), `timeout' if it still runs at `Deadline'.
wait_exit(OsPid, Deadline) ->
    poll(fun() -> not filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) end, 10, Deadline).

%% `ok' once `Done()' is true, checked every `Every' ms; `timeout' after `Deadline'.
poll(Done, Every, Deadline) ->
    case Done() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> receive after Every -> poll(Done, Every, Deadline) end
            end
    end.

%% portnode logs `<time> <LEVEL> <target>: <message>'; map the level to
%% logger's. The level and target are read where portnode puts them, the
%% words after the time, never searched for in the rest of the line: a
%% program's stderr, which portnode logs quoted in a line of its own
%% (target `program'), must not pick its level. Those lines are `notice',
%% shown by default, as a plain port's stderr is.
log_line(Line) ->
    {Level, Kind} = case binary:split(Line, <<" ">>) of
                        [_Time, Rest] ->
                            case binary:split(string:trim(Rest, leading), <<" ">>) of
                                [<<"INFO">>, <<"program:", _/binary>>] -> {notice, program_stderr};
                                [Word | _] -> {level(Word), log}
                            end;
                        _ -> {info, log}
                    end,
    logger:log(Level, "portnode: ~ts", [Line], ?LOG_META(Kind)).

level(<<"ERROR">>) -> error;
level(<<"WARN">>) -> warning;
level(<<"DEBUG">>) -> debug;
level(<<"TRACE">>) -> debug;
level(_) -> info.
