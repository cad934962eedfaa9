defmodule PortnodeUser.Application do
  @moduledoc "A user's application: one program, supervised, as one line of a children list."
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {:portnode_service,
       id: :svc, name: :svc, program: "/bin/sh", args: ["-c", "echo svc up; exec sleep 600"]}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: PortnodeUser.Supervisor)
  end
end
