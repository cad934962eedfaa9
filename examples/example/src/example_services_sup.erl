%% @doc The two Python services, as in the original port_server: a
%% one_for_one supervisor, 5 restarts in 5 s, permanent children with a
%% 5000 ms shutdown. Each service is one line: `portnode:service/1'. Each
%% says READY=1 once it listens (`{ready, notify}'), so service_b, which
%% calls service_a, starts only once service_a is ready.
-module(example_services_sup).
-behaviour(supervisor).

-export([start_link/0, ports/0]).
-export([init/1]).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc The TCP ports of service_a and service_b: app env, else the
%% environment ($SERVICE_A_PORT, $SERVICE_B_PORT), else 8000 and 8001.
-spec ports() -> {inet:port_number(), inet:port_number()}.
ports() ->
    {port(service_a_port, "SERVICE_A_PORT", 8000), port(service_b_port, "SERVICE_B_PORT", 8001)}.

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {PortA, PortB} = ports(),
    Env = {env, [{"SERVICE_A_PORT", integer_to_list(PortA)}, {"SERVICE_B_PORT", integer_to_list(PortB)},
                 {"PYTHONUNBUFFERED", "1"}]},
    Service = fun(Name) ->
                      portnode:service(#{id => Name,
                                         start => {{spawn_executable, priv(atom_to_list(Name))},
                                                   [Env, {line, 4096}, {name, Name}, {ready, notify},
                                                    {output, {example_stats, output}}]},
                                         restart => permanent,
                                         shutdown => 5000})
              end,
    Flags = #{strategy => one_for_one, intensity => 5, period => 5},
    {ok, {Flags, [Service(service_a), Service(service_b)]}}.

port(Key, Var, Default) ->
    case application:get_env(example, Key) of
        {ok, Port} -> Port;
        undefined ->
            case os:getenv(Var) of
                false -> Default;
                Value -> list_to_integer(Value)
            end
    end.

priv(Program) ->
    case code:priv_dir(example) of
        {error, bad_name} -> erlang:error({priv_dir_missing, example});
        Dir -> filename:join(Dir, Program)
    end.
