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
end
