%% @doc Runs on a peer node: opens a program on a portnode and owns it until killed.
-module(remote_owner).

-export([start/3]).

%% @doc Spawns an owner that opens `Cmd' on `PortnodeNode' and tells `ReportTo' the os pid.
-spec start(node(), string(), pid()) -> pid().
start(PortnodeNode, Cmd, ReportTo) ->
    spawn(fun() ->
              H = portnode:open_port(PortnodeNode, {spawn, Cmd}, []),
              ReportTo ! {remote_os_pid, portnode:os_pid(H)},
              receive never -> ok end
          end).
