%% @doc Programs for the service tests that speak sd_notify as a daemon
%% does: real datagrams on `$NOTIFY_SOCKET', with Python's standard
%% library only. A program is a list of steps, run in order:
%% <ul>
%% <li>`{sleep, Ms}'; `wait' (sleep until stopped); `{exit, N}';</li>
%% <li>`{send, Text}': one datagram (Text may hold several lines; `$$' is its pid);</li>
%% <li>`{child_send, Text}': a child process sends it (and lingers 2 s);</li>
%% <li>`{kick, EveryMs, Times}': `WATCHDOG=1' every `EveryMs', `Times' times;</li>
%% <li>`junk': datagrams that are not sd_notify (NUL bytes, too long, bad values);</li>
%% <li>`{print, Var}': prints `Var=Value' of the environment and its own pid as `PID=N';</li>
%% <li>`{touch, Path}'; `{require, Path}' (exit 7 if it does not exist);
%%     `{pidfile, Path}': writes its pid there; `{check, Path, Out}':
%%     writes to `Out' whether `Path' exists (`yes' or `no').</li>
%% </ul>
-module(notifier).

-export([program/1, send_from_outside/2, python/0]).

-spec python() -> string().
python() ->
    os:find_executable("python3").

%% @doc `{PortName, Settings}' for a program that runs `Steps'.
-spec program([term()]) -> {portnode:port_name(), list()}.
program(Steps) ->
    {{spawn_executable, python()}, [{args, ["-u", "-c", code() | [step(S) || S <- Steps]]}]}.

%% @doc Sends `Text' to `Path' from a process outside any program (a
%% python3 run by this VM): what another program could do.
-spec send_from_outside(string(), string()) -> ok.
send_from_outside(Path, Text) ->
    Code = "import socket, sys\n"
           "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
           "s.sendto(sys.argv[2].encode(), sys.argv[1])\n",
    Port = erlang:open_port({spawn_executable, python()}, [{args, ["-c", Code, Path, Text]}, exit_status]),
    receive {Port, {exit_status, 0}} -> ok after 10000 -> erlang:error(outside_sender_failed) end.

step({sleep, Ms}) -> "sleep:" ++ integer_to_list(Ms);
step(wait) -> "wait";
step({exit, N}) -> "exit:" ++ integer_to_list(N);
step({send, Text}) -> "send:" ++ Text;
step({child_send, Text}) -> "child_send:" ++ Text;
step({kick, Every, Times}) -> "kick:" ++ integer_to_list(Every) ++ ":" ++ integer_to_list(Times);
step(junk) -> "junk";
step({print, Var}) -> "print:" ++ Var;
step({touch, Path}) -> "touch:" ++ Path;
step({require, Path}) -> "require:" ++ Path;
step({pidfile, Path}) -> "pidfile:" ++ Path;
step({check, Path, Out}) -> "check:" ++ Path ++ "|" ++ Out.

code() ->
    "import os, socket, sys, time\n"
    "def notify(text):\n"
    "    path = os.environ['NOTIFY_SOCKET']\n"
    "    if path.startswith('@'): path = '\\0' + path[1:]\n"
    "    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:\n"
    "        s.sendto(text if isinstance(text, bytes) else text.replace('$$', str(os.getpid())).encode(), path)\n"
    "for step in sys.argv[1:]:\n"
    "    op, _, arg = step.partition(':')\n"
    "    if op == 'sleep': time.sleep(int(arg) / 1000)\n"
    "    elif op == 'wait':\n"
    "        while True: time.sleep(1000)\n"
    "    elif op == 'exit': sys.exit(int(arg))\n"
    "    elif op == 'send': notify(arg)\n"
    "    elif op == 'child_send':\n"
    "        if os.fork() == 0:\n"
    "            notify(arg); time.sleep(2); os._exit(0)\n"
    "    elif op == 'kick':\n"
    "        every, times = arg.split(':')\n"
    "        for _ in range(int(times)):\n"
    "            notify('WATCHDOG=1'); time.sleep(int(every) / 1000)\n"
    "    elif op == 'junk':\n"
    "        for j in [b'READY=1\\0', b'x' * 70000, b'READY=2', b'READY', b'=1', b'\\xff\\xfe', b'MAINPID=abc', b'']:\n"
    "            try: notify(j)\n"
    "            except OSError: pass\n"
    "    elif op == 'print': print('%s=%s' % (arg, os.environ.get(arg, '')), 'PID=%d' % os.getpid(), flush=True)\n"
    "    elif op == 'touch': open(arg, 'w').close()\n"
    "    elif op == 'require':\n"
    "        if not os.path.exists(arg): sys.exit(7)\n"
    "    elif op == 'pidfile':\n"
    "        with open(arg, 'w') as f: f.write(str(os.getpid()))\n"
    "    elif op == 'check':\n"
    "        path, out = arg.split('|')\n"
    "        with open(out, 'w') as f: f.write('yes' if os.path.exists(path) else 'no')\n".
