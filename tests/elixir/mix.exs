# A mix project that uses portnode as a path dependency, as an Elixir user
# would: tests/deps/mix-app builds it against a snapshot of the checkout
# ($PORTNODE_PATH) and runs its ExUnit suite. Run by hand from here with
#   MIX_REBAR3=$(command -v rebar3) elixir --sname portnode_user -S mix test
# (mix builds rebar3 dependencies with $MIX_REBAR3; hex is not needed).
defmodule PortnodeUser.MixProject do
  use Mix.Project

  def project do
    [
      app: :portnode_user,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [{:portnode, path: System.get_env("PORTNODE_PATH", Path.expand("../..", __DIR__))}]
    ]
  end

  def application do
    [mod: {PortnodeUser.Application, []}, extra_applications: [:logger]]
  end
end
