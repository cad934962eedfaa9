%% @doc A plain Erlang supervisor for tests: flags and children from its argument.
-module(erlang_sup).
-behaviour(supervisor).

-export([init/1]).

-spec init(#{children := [supervisor:child_spec()], atom() => term()}) ->
          {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(Flags = #{children := Children}) ->
    {ok, {maps:without([children], Flags), Children}}.
