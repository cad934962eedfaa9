%% A case that fails on request, so that `./test selfcheck` can prove the
%% test runner goes red when a common_test case fails.
-module(selfcheck_SUITE).
-export([all/0, fails_on_request/1]).

all() -> [fails_on_request].

%% Fails when PORTNODE_SELFCHECK_FAIL is set, passes otherwise.
fails_on_request(_Config) ->
    false = os:getenv("PORTNODE_SELFCHECK_FAIL") =/= false.
