%% @doc Running a program to completion: `portnode:cmd/2,3', in the shape
%% of Elixir's `System.cmd/3' and `MuonTrap.cmd/3'.
%%
%% The program's stdout (and stderr, with `stderr_to_stdout') is collected
%% into one binary; `Status' is its exit status, `{signal, Name}' if a
%% signal ended it, `timeout' if it was stopped at `{timeout, Ms}', or
%% `max_output' if it was stopped for printing more than `{max_output,
%% Bytes}' (the output then holds the first `Bytes'). Whatever ends it, the
%% whole of it is gone when `cmd' returns: daemons it left, the tree a
%% timeout stops.
%%
%% Settings are those of `portnode:open_port/2' (`args', `env', `cd',
%% `user', `stop_signal', `kill_timeout', ...) plus:
%% <ul>
%% <li>`{timeout, Ms}': stop it (its stop signal, SIGKILL after its
%%     `kill_timeout') after `Ms' and return the output so far;</li>
%% <li>`{input, IoData}': written to its stdin, which is then closed (it is
%%     closed at once without it: a program that reads stdin sees EOF, not a
%%     wait forever);</li>
%% <li>`{max_output, Bytes}': past it, stop it.</li>
%% </ul>
%% The output is raw bytes, whatever framing the settings name. From Elixir,
%% `stderr_to_stdout: true' works as in `System.cmd/3', and binaries are
%% strings everywhere (`env' included):
%% ```
%% {"hi\n", 0} = :portnode.cmd({:spawn_executable, "/bin/echo"}, args: ["hi"])
%% {out, :timeout} = :portnode.cmd({:spawn, "yes"}, timeout: 100, max_output: 1_000_000)
%% '''
-module(portnode_cmd).

-export([cmd/3]).

-type status() :: non_neg_integer() | {signal, atom() | pos_integer()} | timeout | max_output.
-export_type([status/0]).

%% @doc Runs `PortName' with `Settings' on portnode `Node' until it exits,
%% and returns `{Output, Status}'. Raises what `portnode:open_port/3'
%% raises for a bad setting or a missing program.
-spec cmd(node(), portnode:port_name(), list()) -> {binary(), status()}.
cmd(Node, PortName, Settings) when is_list(Settings) ->
    {Options, PortSettings} = lists:partition(fun cmd_option/1, lists:filtermap(fun elixir_style/1, Settings)),
    Timeout = proplists:get_value(timeout, Options, infinity),
    MaxOutput = proplists:get_value(max_output, Options, infinity),
    Input = proplists:get_value(input, Options, []),
    valid(Timeout) andalso valid(MaxOutput) andalso is_iodata(Input)
        orelse erlang:error(badarg, [Node, PortName, Settings]),
    H = portnode:open_port(Node, PortName, PortSettings ++ [stream, binary, exit_status, exit_signal]),
    Mon = erlang:monitor(process, H),
    %% As a port message (no credit to keep, no monitor left behind); a
    %% program that has exited already takes nothing, and its output waits.
    iolist_size(Input) > 0 andalso (H ! {self(), {command, Input}}),
    try portnode:close_stdin(H) catch error:badarg -> ok end,
    Deadline = case Timeout of
                   infinity -> infinity;
                   Ms -> erlang:monotonic_time(millisecond) + Ms
               end,
    {Output, Status} = collect(H, Mon, Deadline, MaxOutput, [], 0),
    gone(H, Mon),
    {iolist_to_binary(lists:reverse(Output)), Status};
cmd(Node, PortName, Settings) ->
    erlang:error(badarg, [Node, PortName, Settings]).

%% Output (reversed) and status. The program's last output comes before
%% its status, as a port sends it.
collect(H, Mon, Deadline, Max, Acc, Size) ->
    receive
        {H, {data, Data}} ->
            case add(Data, Acc, Size, Max) of
                {full, Output} -> {stop(H, Output, Max, Max), max_output};
                {Acc1, Size1} -> collect(H, Mon, Deadline, Max, Acc1, Size1)
            end;
        {H, {exit_status, Status}} ->
            {Acc, Status};
        {H, {exit_signal, Signal}} ->
            {Acc, {signal, Signal}};
        {'DOWN', Mon, process, H, Reason} ->
            erlang:error({portnode_cmd, Reason})
    after remaining(Deadline) ->
        {stop(H, Acc, Max, Size), timeout}
    end.

%% Appends `Data', or says the output is full with the part that fits.
add(Data, Acc, Size, Max) when is_integer(Max), Size + byte_size(Data) > Max ->
    {full, [binary:part(Data, 0, Max - Size) | Acc]};
add(Data, Acc, Size, _Max) ->
    {[Data | Acc], Size + byte_size(Data)}.

%% Stops all of the program and returns once it is gone, with the output
%% that came before the stop (the handle's messages come in order, and the
%% stop's answer after them).
stop(H, Acc, Max, Size) ->
    portnode:stop(H),
    take_data(H, Acc, Max, Size).

take_data(H, Acc, Max, Size) ->
    receive
        {H, {data, Data}} ->
            case add(Data, Acc, Size, Max) of
                {full, Output} -> take_data(H, Output, Max, Max);
                {Acc1, Size1} -> take_data(H, Acc1, Max, Size1)
            end;
        {H, _} ->
            take_data(H, Acc, Max, Size)
    after 0 ->
        Acc
    end.

%% Waits for the handle to end, and leaves nothing of it in the mailbox:
%% its messages, its 'DOWN', and the 'EXIT' a caller that traps exits gets.
gone(H, Mon) ->
    receive {'DOWN', Mon, process, H, _} -> ok after 10000 -> erlang:demonitor(Mon, [flush]) end,
    flush(H),
    case process_info(self(), trap_exit) of
        {trap_exit, true} -> receive {'EXIT', H, _} -> ok after 1000 -> ok end;
        _ -> ok
    end.

flush(H) ->
    receive {H, _} -> flush(H) after 0 -> ok end.

remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

cmd_option({timeout, _}) -> true;
cmd_option({input, _}) -> true;
cmd_option({max_output, _}) -> true;
cmd_option(_) -> false.

valid(infinity) -> true;
valid(N) -> is_integer(N) andalso N >= 0.

is_iodata(Data) ->
    try iolist_size(Data) of _ -> true catch error:badarg -> false end.

%% What an Elixir caller writes as System.cmd's options, as settings:
%% `stderr_to_stdout: true', and strings (binaries) in `env'.
elixir_style({stderr_to_stdout, true}) -> {true, stderr_to_stdout};
elixir_style({stderr_to_stdout, false}) -> false;
elixir_style({env, Env}) when is_list(Env) ->
    {true, {env, [{chars(K), case V of false -> false; nil -> false; _ -> chars(V) end} || {K, V} <- Env]}};
elixir_style(Setting) -> {true, Setting}.

chars(S) when is_binary(S) -> unicode:characters_to_list(S);
chars(S) -> S.
