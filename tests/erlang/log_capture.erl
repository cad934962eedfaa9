%% @doc A logger handler for tests: sends each event to a pid as `{log, Event}'.
-module(log_capture).

-export([log/2]).

-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(Event, #{config := #{pid := Pid}}) ->
    Pid ! {log, Event},
    ok.
