%% @doc The Python interpreter that suites run their programs with: a
%% suite without it is skipped.
-module(python).

-export([init_per_suite/1]).

%% @doc `Config' with `{python, Path}': the interpreter itself, not a
%% wrapper (pyenv's shim is a shell script that forks: it would count
%% against a process limit); or a skip without python3.
-spec init_per_suite(list()) -> list() | {skip, string()}.
init_per_suite(Config) ->
    case os:find_executable("python3") of
        false -> {skip, "python3 is needed"};
        Python -> [{python, string:trim(os:cmd(Python ++ " -c 'import sys; print(sys.executable)'"))} | Config]
    end.
