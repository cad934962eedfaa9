%% @doc The demo's tree: an Erlang worker, Erlang-supervised services, and a
%% supervisor that runs inside portnode.
%%
%% ```
%% example_sup (one_for_one, 0 restarts: a subtree that gives up stops the app)
%% |-- example_stats          Erlang gen_server: starts and calls per service
%% |-- example_services_sup   Erlang supervisor (one_for_one, 5 restarts in 5 s)
%% |   |-- service_a          portnode_service: priv/service_a (XML-RPC on 8000)
%% |   `-- service_b          portnode_service: priv/service_b (XML-RPC on 8001)
%% `-- heartbeats             portnode supervisor (one_for_all), runs in portnode
%%     |-- fast               priv/heartbeat fast 20
%%     `-- slow               priv/heartbeat slow 60
%% '''
-module(example_sup).
-behaviour(supervisor).

-export([start_link/0]).
-export([init/1]).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Flags = #{strategy => one_for_one, intensity => 0, period => 1},
    Stats = #{id => example_stats, start => {example_stats, start_link, []}},
    Services = #{id => example_services_sup, start => {example_services_sup, start_link, []},
                 type => supervisor, shutdown => infinity},
    Heartbeat = fun(Name, Seconds) ->
                        #{id => Name,
                          start => {{spawn_executable, priv("heartbeat")},
                                    [{args, [atom_to_list(Name), integer_to_list(Seconds)]}, {line, 1024}]},
                          shutdown => 2000}
                end,
    Heartbeats = portnode:supervisor(heartbeats, #{strategy => one_for_all, intensity => 3, period => 10},
                                     [Heartbeat(fast, 20), Heartbeat(slow, 60)]),
    {ok, {Flags, [Stats, Services, Heartbeats]}}.

priv(Program) ->
    case code:priv_dir(example) of
        {error, bad_name} -> erlang:error({priv_dir_missing, example});
        Dir -> filename:join(Dir, Program)
    end.
