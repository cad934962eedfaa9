%% The demo application: port_server remade. Its modules are compiled with
%% portnode's (src_dirs); this resource file is installed next to them by
%% scripts/install-example-app.
{application, example, [
    {description, "port_server remade: two Python services supervised by OTP through portnode"},
    {vsn, "0.1.0"},
    {modules, [example_app, example_sup, example_services_sup, example_stats]},
    {registered, [example_sup, example_services_sup, example_stats, service_a, service_b]},
    {mod, {example_app, []}},
    {applications, [kernel, stdlib, portnode]},
    {env, [
        %% Ports of the services; else $SERVICE_A_PORT / $SERVICE_B_PORT; else 8000 / 8001.
        %% {service_a_port, 8000}, {service_b_port, 8001}
    ]}
]}.
