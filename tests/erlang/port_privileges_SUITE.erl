%% @doc Per-program privileges and limits (`{user, _}', `{group, _}', `{nice, _}',
%% `{rlimit, _}', `{umask, _}'), applied in the child before exec, as the
%% kernel reports them for the running program. The cases that change user
%% need portnode to run as root, as the bridge runs it here.
-module(port_privileges_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [runs_as_nobody_without_supplementary_groups, group_by_name_and_id, service_runs_as_nobody,
     nice_shows_in_proc_stat, limits_show_in_proc_limits, umask_is_set, bad_settings_are_named,
     cannot_change_user_is_eperm, private_cwd_as_another_user, numeric_uid_needs_a_group,
     failure_before_exec_is_logged_on_the_owners_node].

suite() ->
    [{timetrap, {minutes, 2}}].

init_per_suite(Config) ->
    case string:trim(os:cmd("id -u")) of
        "0" ->
            {ok, _} = application:ensure_all_started(portnode),
            Config;
        _ ->
            {skip, "portnode must run as root to change a program's user"}
    end.

end_per_suite(_Config) ->
    application:stop(portnode).

init_per_testcase(_Case, Config) ->
    process_flag(trap_exit, true),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%% The lines a program prints, until its exit status.
lines(PortName, Settings) ->
    H = portnode:open_port(PortName, [{line, 1024}, exit_status | Settings]),
    collect(H).

collect(H) ->
    receive
        {H, {data, {eol, Line}}} -> [Line | collect(H)];
        {H, {exit_status, S}} -> [{exit_status, S}]
    after 5000 -> [timeout]
    end.

sh() -> {spawn_executable, "/bin/sh"}.

%% A sleeping program with Settings, its os pid, and a fun that stops it.
sleeper(Settings) ->
    H = portnode:open_port({spawn_executable, "/bin/sleep"}, [{args, ["300"]} | Settings]),
    {portnode:os_pid(H), fun() -> ok = portnode:stop(H, brutal_kill) end}.

%% @doc {user, "nobody"}: the program's uid and gid are nobody's, and it has no supplementary group.
runs_as_nobody_without_supplementary_groups(_) ->
    ?assertEqual(["65534", "65534", "65534", {exit_status, 0}],
                 lines(sh(), [{args, ["-c", "id -u; id -g; id -G"]}, {user, "nobody"}])),
    %% by uid, as a binary, as an atom
    ?assertEqual(["65534", {exit_status, 0}], lines({spawn, "id -u"}, [{user, 65534}])),
    ?assertEqual(["65534", {exit_status, 0}], lines({spawn, "id -u"}, [{user, <<"nobody">>}])),
    ?assertEqual(["65534", {exit_status, 0}], lines({spawn, "id -u"}, [{user, nobody}])),
    %% portnode itself (root) has supplementary groups to drop only if it has any; root's stay with root
    ?assertEqual(["0", {exit_status, 0}], lines({spawn, "id -u"}, [])).

%% @doc {group, G} sets the group (by name or id) and drops the supplementary groups.
group_by_name_and_id(_) ->
    ?assertEqual(["0 65534 65534", {exit_status, 0}], lines(sh(), [{args, ["-c", "echo $(id -u) $(id -g) $(id -G)"]}, {group, "nogroup"}])),
    ?assertEqual(["65534 4242", {exit_status, 0}], lines(sh(), [{args, ["-c", "echo $(id -u) $(id -g)"]}, {user, "nobody"}, {group, 4242}])).

%% @doc A portnode_service child spec carries the settings through: its program runs as nobody.
service_runs_as_nobody(_) ->
    {ok, Sup} = supervisor:start_link(erlang_sup, #{children => [portnode:service(s, {spawn, "sleep 300"}, [{user, "nobody"}])]}),
    [{s, Pid, worker, _}] = supervisor:which_children(Sup),
    OsPid = portnode_service:os_pid(Pid),
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    ?assertMatch({match, _}, re:run(Status, "\nUid:\t65534\t65534\t65534\t65534\n")),
    exit(Sup, shutdown),
    receive {'EXIT', Sup, shutdown} -> ok after 10000 -> ct:fail(supervisor_did_not_stop) end,
    ?assertEqual([], os_process:wait_gone([OsPid], 2000)).

%% @doc {nice, 10}: field 19 of /proc/<pid>/stat is 10.
nice_shows_in_proc_stat(_) ->
    {OsPid, Stop} = sleeper([{nice, 10}]),
    {ok, Stat} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat"),
    %% fields after the command name, which is in parentheses: state is field 3
    [_, AfterComm] = binary:split(Stat, <<") ">>),
    Fields = binary:split(AfterComm, <<" ">>, [global]),
    ?assertEqual(<<"10">>, lists:nth(19 - 2, Fields)),
    Stop().

%% @doc {rlimit, [...]}: each limit shows in /proc/<pid>/limits, soft and hard.
limits_show_in_proc_limits(_) ->
    {OsPid, Stop} = sleeper([{rlimit, [{nofile, 100}, {core, 0}, {cpu, {50, 60}}, {as, 1 bsl 30}, {nproc, {77, 78}}]}]),
    {ok, Limits} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/limits"),
    ct:log("~s", [Limits]),
    Expect = [{"Max open files", "100", "100"}, {"Max core file size", "0", "0"},
              {"Max cpu time", "50", "60"}, {"Max address space", "1073741824", "1073741824"},
              {"Max processes", "77", "78"}],
    [?assertMatch({match, _}, re:run(Limits, "\n" ++ Name ++ " +" ++ Soft ++ " +" ++ Hard ++ " "), Name)
     || {Name, Soft, Hard} <- Expect],
    Stop().

%% @doc {umask, 8#027}: the program's umask.
umask_is_set(_) ->
    ?assertEqual(["0027", {exit_status, 0}], lines(sh(), [{args, ["-c", "umask"]}, {umask, 8#027}])).

%% @doc A value that cannot be (an unknown user or group, a nice out of range, an
%% unknown resource, a umask above 0777) is a badarg naming it, and a service's
%% {bad_setting, S} start error.
bad_settings_are_named(_) ->
    Bad = [{user, "no_such_user_portnode"}, {group, "no_such_group_portnode"}, {nice, 20}, {nice, -21},
           {rlimit, [{stack, 1}]}, {rlimit, [{cpu, {5, 1}}]}, {rlimit, nofile}, {umask, 8#1000}, {user, -1}],
    [?assertEqual({error, {bad_setting, S}}, portnode_service:start_link(b, {spawn, "true"}, [S]), S) || S <- Bad].

%% @doc A portnode that is not root cannot make a program another user: open_port raises eperm.
cannot_change_user_is_eperm(Config) ->
    Exe = filename:join([code:priv_dir(portnode), "bin", "portnode"]),
    [Alive, Host] = string:split(atom_to_list(portnode:node()), "@"),
    Name = Alive ++ "_nobody",
    Port = open_port({spawn_executable, "/usr/bin/setpriv"},
                     [{args, ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Exe,
                              "--sname", Name, "--exit-on-stdin-eof"]},
                      {env, [{"PORTNODE_COOKIE", atom_to_list(erlang:get_cookie())}, {"HOME", "/nonexistent"}]},
                      {cd, ?config(priv_dir, Config)}, exit_status, stderr_to_stdout]),
    Node = list_to_atom(Name ++ "@" ++ Host),
    try
        ok = wait_pong(Node, 100),
        ?assertError(eperm, portnode:open_port(Node, {spawn, "true"}, [{user, "root"}])),
        %% the same portnode still runs programs as itself
        H = portnode:open_port(Node, {spawn, "id -u"}, [{line, 80}, exit_status]),
        ?assertEqual(["65534", {exit_status, 0}], collect(H)),
        %% portnode, its spawner and its watchdog hold the cookie: they are
        %% not dumpable, so a program of the same user cannot read their
        %% environment or memory (ptrace access; the test reads environ, which
        %% was readable before).
        {os_pid, PnPid} = erlang:port_info(Port, os_pid),
        PnPids = [PnPid | os_process:children_of(PnPid)],
        ?assert(length(PnPids) >= 3, PnPids),
        Script = lists:flatten([io_lib:format("cat /proc/~b/environ >/dev/null 2>&1 && echo readable ~b; ", [P, P])
                                || P <- PnPids]) ++ "echo done",
        H2 = portnode:open_port(Node, sh(), [{args, ["-c", Script]}, {line, 200}, exit_status, stderr_to_stdout]),
        ?assertEqual(["done", {exit_status, 0}], collect(H2))
    after
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        port_close(Port),
        ?assertEqual([], os_process:wait_gone([OsPid], 5000))
    end.

wait_pong(_Node, 0) -> timeout;
wait_pong(Node, N) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang -> timer:sleep(100), wait_pong(Node, N - 1)
    end.

%% @doc As sudo: the program's directory is entered before privileges are
%% dropped, so a program run as nobody starts in a private (0700,
%% root-owned) directory, such as the VM's cwd in a root-owned checkout.
private_cwd_as_another_user(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "private"),
    ok = file:make_dir(Dir),
    ok = file:change_mode(Dir, 8#700),
    ?assertEqual([Dir, "65534", {exit_status, 0}],
                 lines(sh(), [{args, ["-c", "pwd; id -u"]}, {cd, Dir}, {user, "nobody"}])).

%% @doc A uid with no passwd entry has no primary group: without
%% `{group, _}' it is a badarg naming the user setting (it would keep group
%% 0); with one, it runs with that group and no supplementary group.
numeric_uid_needs_a_group(_) ->
    Uid = 54321,
    "" = os:cmd("getent passwd " ++ integer_to_list(Uid)),
    ?assertError(badarg, portnode:open_port({spawn, "id"}, [{user, Uid}])),
    ?assertEqual({error, {bad_setting, {user, Uid}}}, portnode_service:start_link(b, {spawn, "true"}, [{user, Uid}])),
    ?assertEqual(["54321 4242 4242", {exit_status, 0}],
                 lines(sh(), [{args, ["-c", "echo $(id -u) $(id -g) $(id -G)"]}, {user, Uid}, {group, 4242}])).

%% @doc A program's child that fails before exec (here execve: its script
%% names an interpreter that does not exist) is logged on the owner's node,
%% naming the program, the step and the errno; the owner still gets the
%% exit status erts gives.
failure_before_exec_is_logged_on_the_owners_node(Config) ->
    Script = filename:join(?config(priv_dir, Config), "no_interpreter"),
    ok = file:write_file(Script, <<"#!/no/such/interpreter\n">>),
    ok = file:change_mode(Script, 8#755),
    ok = logger:add_handler(capture, log_capture, #{config => #{pid => self()}}),
    try
        Erts = open_port({spawn_executable, Script}, [exit_status]),
        Expected = receive {Erts, {exit_status, S}} -> S after 5000 -> timeout end,
        H = portnode:open_port({spawn_executable, Script}, [exit_status]),
        ?assertEqual(Expected, receive {H, {exit_status, S2}} -> S2 after 5000 -> timeout end),
        Text = receive_log("failed before exec", 5000),
        ct:log("~ts", [Text]),
        [?assertNotEqual(nomatch, string:find(Text, Part), Part) || Part <- [Script, "execve", "enoent"]]
    after
        logger:remove_handler(capture)
    end.

receive_log(Needle, Ms) ->
    receive
        {log, #{msg := {Format, Args}}} when is_list(Format) ->
            Text = lists:flatten(io_lib:format(Format, Args)),
            case string:find(Text, Needle) of
                nomatch -> receive_log(Needle, Ms);
                _ -> Text
            end;
        {log, _} -> receive_log(Needle, Ms)
    after Ms -> ct:fail({no_log, Needle})
    end.
