%% @doc The portnode API.
%%
%% The default portnode node is the one the {@link portnode_bridge} launched
%% (or attached to); every function also takes a node explicitly.
-module(portnode).
-compile({no_auto_import, [node/0]}).

%% Node
-export([node/0, ping/0, ping/1, info/0, info/1]).

%%% Node

%% @doc The default portnode node of this Erlang node.
-spec node() -> node().
node() ->
    portnode_bridge:node().

%% @doc `pong' if the default portnode answers its control server.
-spec ping() -> pong.
ping() ->
    ping(?MODULE:node()).

%% @doc `pong' if portnode `Node' answers its control server.
-spec ping(node()) -> pong.
ping(Node) ->
    gen_server:call({portnode, Node}, ping).

%% @doc Facts about the default portnode: version, node, connected nodes, process count, uptime.
-spec info() -> #{atom() => term()}.
info() ->
    info(?MODULE:node()).

%% @doc Facts about portnode `Node'.
-spec info(node()) -> #{atom() => term()}.
info(Node) ->
    gen_server:call({portnode, Node}, info).
