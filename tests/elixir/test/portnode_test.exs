defmodule PortnodeTest do
  # Not async: capture_log sees every process's logs.
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog

  defp alive?(os_pid), do: File.exists?("/proc/#{os_pid}")

  defp wait_until(fun, ms \\ 10_000) do
    cond do
      fun.() -> :ok
      ms <= 0 -> flunk("condition not met in time")
      true -> Process.sleep(20); wait_until(fun, ms - 20)
    end
  end

  # ./test selfcheck: the elixir step must go red when a test fails.
  test "fails on request" do
    refute System.get_env("PORTNODE_SELFCHECK_FAIL"), "failing on request (PORTNODE_SELFCHECK_FAIL)"
  end

  test "the application's {:portnode_service, opts} child runs its program" do
    os_pid = :portnode_service.os_pid(:svc)
    assert is_integer(os_pid) and alive?(os_pid)
    assert File.read!("/proc/#{os_pid}/comm") == "sleep\n"
  end

  test "a service's reports and output reach Elixir's Logger, with the service and the os pid" do
    log =
      capture_log([level: :info], fn ->
        {:ok, sup} =
          Supervisor.start_link(
            [{:portnode_service, id: :t1, program: "/bin/sh", args: ["-c", "echo hello from t1; exec sleep 600"]}],
            strategy: :one_for_one, max_restarts: 0)
        [{:t1, pid, :worker, _}] = Supervisor.which_children(sup)
        os_pid = :portnode_service.os_pid(pid)
        Process.flag(:trap_exit, true)
        System.cmd("kill", ["-9", "#{os_pid}"])
        assert_receive {:EXIT, ^sup, :shutdown}, 10_000
        Process.sleep(200)
        send(self(), {:os_pid, os_pid})
      end)
    assert_received {:os_pid, os_pid}
    assert log =~ ~r/service :?t1 started: os pid #{os_pid}, program/
    assert log =~ "hello from t1"
    assert log =~ ~r/service :?t1 \(os pid #{os_pid}\) exited: .*exit_signal.*sigkill/
  end

  test "a bad setting raises an ArgumentError whose message names it" do
    e = assert_raise ArgumentError, fn ->
      :portnode.open_port({:spawn_executable, "/bin/cat"}, [{:busy_limits_port, :disabled}])
    end
    assert Exception.message(e) =~ "busy_limits_port"
  end

  test "a bad setting in a child spec is named in the start error" do
    Process.flag(:trap_exit, true)
    assert {:error, {:shutdown, {:failed_to_start_child, :bad, {:bad_setting, {:busy_limits_port, :disabled}}}}} =
             Supervisor.start_link([{:portnode_service, id: :bad, program: "/bin/cat", busy_limits_port: :disabled}],
               strategy: :one_for_one)
    assert {:error, {:shutdown, {:failed_to_start_child, :out, {:bad_setting, {:output, :loud}}}}} =
             Supervisor.start_link([{:portnode_service, id: :out, program: "/bin/cat", output: :loud}],
               strategy: :one_for_one)
  end

  test "binaries are accepted where erts accepts them: program, command, args, arg0, cd" do
    h = :portnode.open_port({:spawn_executable, "/bin/sh"},
          [{:args, ["-c", "pwd; echo $0"]}, {:arg0, "my-sh"}, {:cd, "/tmp"}, :binary, {:line, 100}, :exit_status])
    assert is_pid(h)
    assert_receive {^h, {:data, {:eol, "/tmp"}}}, 5000
    assert_receive {^h, {:data, {:eol, "my-sh"}}}, 5000
    assert_receive {^h, {:exit_status, 0}}, 5000
    h2 = :portnode.open_port({:spawn, "echo spawned"}, [:binary, :exit_status])
    assert_receive {^h2, {:data, "spawned\n"}}, 5000
  end

  test "portnode does not log below info under Elixir's default debug level" do
    assert Logger.level() == :debug
    portnode_os_pid = :gen_server.call(:portnode_bridge, :os_pid)
    args = File.read!("/proc/#{portnode_os_pid}/cmdline") |> String.split(<<0>>)
    assert ["--log-level", "info"] == Enum.drop_while(args, &(&1 != "--log-level")) |> Enum.take(2)
  end

  test "a service stops its program when its supervisor stops" do
    {:ok, sup} = Supervisor.start_link([{:portnode_service, id: :t2, command: "sleep 600"}], strategy: :one_for_one)
    [{:t2, pid, :worker, _}] = Supervisor.which_children(sup)
    os_pid = :portnode_service.os_pid(pid)
    assert alive?(os_pid)
    :ok = Supervisor.stop(sup)
    wait_until(fn -> not alive?(os_pid) end)
  end

  test ":portnode.cmd reads as System.cmd: output and status, options as a keyword list" do
    assert {"hi\n", 0} == :portnode.cmd({:spawn_executable, "/bin/echo"}, args: ["hi"])
    assert {"1 two\n", 3} ==
             :portnode.cmd({:spawn_executable, "/bin/sh"},
               args: ["-c", "echo $X $Y >&2; exit 3"], env: [{"X", "1"}, {"Y", "two"}], stderr_to_stdout: true)
    assert {"abc", 0} == :portnode.cmd({:spawn, "cat"}, input: "abc")
    assert {"", :timeout} == :portnode.cmd({:spawn, "sleep 60"}, timeout: 200)
    assert {"", {:signal, :sigkill}} == :portnode.cmd({:spawn_executable, "/bin/sh"}, args: ["-c", "kill -9 $$"])
  end

  test "a service with ready: :notify has started once its program says READY=1" do
    # sd_notify with Python's standard library: READY=1 on $NOTIFY_SOCKET.
    code = "import os, socket, time; time.sleep(0.3); " <>
             "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); " <>
             "time.sleep(600)"
    t0 = System.monotonic_time(:millisecond)
    {:ok, sup} =
      Supervisor.start_link(
        [{:portnode_service, id: :ready, program: System.find_executable("python3"), args: ["-c", code], ready: :notify, ready_timeout: 5000}],
        strategy: :one_for_one)
    assert System.monotonic_time(:millisecond) - t0 >= 300
    [{:ready, pid, :worker, _}] = Supervisor.which_children(sup)
    assert alive?(:portnode_service.os_pid(pid))
    :ok = Supervisor.stop(sup)
  end
end
