%% @doc What the benchmarks read of an OS process in /proc: its name and
%% its children.
-module(os_proc).
-export([comm/1, children/1]).

%% @doc The process's command name ("" if it is gone).
-spec comm(pos_integer()) -> string().
comm(Pid) ->
    case file:read_file("/proc/" ++ integer_to_list(Pid) ++ "/comm") of
        {ok, C} -> string:trim(binary_to_list(C));
        {error, _} -> ""
    end.

%% @doc The children of every thread of `Pid' ([] if it is gone).
-spec children(pos_integer()) -> [pos_integer()].
children(Pid) ->
    Dir = "/proc/" ++ integer_to_list(Pid) ++ "/task",
    case file:list_dir(Dir) of
        {ok, Tasks} ->
            lists:append([case file:read_file(filename:join([Dir, T, "children"])) of
                              {ok, B} -> [binary_to_integer(C) || C <- string:lexemes(B, " \n")];
                              {error, _} -> []
                          end || T <- Tasks]);
        {error, _} -> []
    end.
