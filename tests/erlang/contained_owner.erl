%% @doc An owner process for containment tests, local or on a peer VM:
%% opens a program on a portnode, reports `{opened, Handle, OsPid}' and
%% each line of output as `{line, Line}' to `ReportTo', and holds the
%% handle until it is killed.
-module(contained_owner).

-export([start/4]).

-spec start(node(), portnode:port_name(), list(), pid()) -> pid().
start(Node, PortName, Settings, ReportTo) ->
    spawn(fun() ->
              {H, OsPid} = portnode:open(Node, PortName, [{line, 256} | Settings]),
              ReportTo ! {opened, H, OsPid},
              relay(H, ReportTo)
          end).

relay(H, ReportTo) ->
    receive
        {H, {data, {eol, Line}}} -> ReportTo ! {line, Line}, relay(H, ReportTo);
        _ -> relay(H, ReportTo)
    end.
