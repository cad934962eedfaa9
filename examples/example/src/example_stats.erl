%% @doc The demo's Erlang worker: counts, per service, how many times its
%% program started and how many calls it answered, from the lines the
%% programs print (it is their output callback). It also logs each line.
-module(example_stats).
-behaviour(gen_server).

%% API
-export([start_link/0, output/2, counts/0]).
%% gen_server
-export([init/1, handle_call/3, handle_cast/2]).

-include_lib("kernel/include/logger.hrl").

-type counts() :: #{atom() => #{starts := non_neg_integer(), calls := non_neg_integer()}}.

%%% API

-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, #{}, []).

%% @doc A service's output callback (see `portnode_service'): never fails.
-spec output(atom(), binary()) -> ok.
output(Service, Line) ->
    ?LOG_INFO("~s: ~ts", [Service, Line]),
    gen_server:cast(?MODULE, {line, Service, Line}).

%% @doc Starts and calls per service so far.
-spec counts() -> counts().
counts() ->
    gen_server:call(?MODULE, counts).

%%% gen_server

-spec init(counts()) -> {ok, counts()}.
init(Counts) ->
    {ok, Counts}.

-spec handle_call(counts, gen_server:from(), counts()) -> {reply, counts(), counts()}.
handle_call(counts, _From, Counts) ->
    {reply, Counts, Counts}.

-spec handle_cast({line, atom(), binary()}, counts()) -> {noreply, counts()}.
handle_cast({line, Service, Line}, Counts) ->
    Key = case binary:match(Line, <<" listening on ">>) of
              nomatch -> calls;
              _ -> starts
          end,
    Old = maps:get(Service, Counts, #{starts => 0, calls => 0}),
    {noreply, Counts#{Service => maps:update_with(Key, fun(N) -> N + 1 end, Old)}}.
