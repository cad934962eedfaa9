%% @doc Top supervisor of the portnode application: owns the bridge.
-module(portnode_sup).
-behaviour(supervisor).

-export([start_link/0]).
-export([init/1]).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Flags = #{strategy => one_for_one, intensity => 3, period => 10},
    Bridge = #{id => portnode_bridge,
               start => {portnode_bridge, start_link, []},
               restart => permanent,
               shutdown => 10000,
               type => worker},
    {ok, {Flags, [Bridge]}}.
