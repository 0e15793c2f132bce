"""Tests for shared.config.load with gateway.config.GatewayConfig: PRISM_* variables, flags, validation."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from gateway.config import GatewayConfig, random_node_id
from notification_service.config import NotifyConfig
from shared.cli.environment import known_variables, misspelled, without_unknown
from shared.config import add_arguments, describe, env_name, env_names, flag_name, load, unknown_variables
from shared.errors import ConfigError
from shared.subjects import Subjects, validate_node_id


def parse_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prism gateway")
    add_arguments(parser, GatewayConfig)
    return parser.parse_args(list(argv))


def load_config(env: dict[str, str] | None = None, *argv: str) -> GatewayConfig:
    return load(GatewayConfig, parse_flags(*argv), environ=env or {})


# -- sources ---------------------------------------------------------------------------------------------


def test_defaults_without_env_or_flags() -> None:
    config = load_config()
    assert config == GatewayConfig()
    assert config.port == 8080
    assert config.routes == ("/ws",)
    assert config.compression is False
    assert config.subject_prefix == ""


def test_load_without_args_reads_only_the_environment() -> None:
    assert load(GatewayConfig, None, environ={"PRISM_PORT": "9001"}).port == 9001


def test_environment_variables_are_read_and_converted() -> None:
    config = load_config(
        {
            "PRISM_NATS_URL": "nats://a:4222,nats://b:4222",
            "PRISM_PORT": "9000",
            "PRISM_NODE_ID": "gw-1",
            "PRISM_ROUTES": "/ws, /chat ,,",
            "PRISM_SUBJECT_PREFIX": "acme.",
            "PRISM_COMPRESSION": "true",
            "PRISM_REQUEST_TIMEOUT": "2.5",
            "PRISM_PRESENCE_STORAGE": "memory",
        }
    )
    assert config.nats_url == "nats://a:4222,nats://b:4222"
    assert config.port == 9000
    assert config.node_id == "gw-1"
    assert config.routes == ("/ws", "/chat")
    assert config.subject_prefix == "acme."
    assert config.compression is True
    assert config.request_timeout == 2.5
    assert config.presence_storage == "memory"


def test_flags_override_environment() -> None:
    config = load_config(
        {"PRISM_PORT": "9000", "PRISM_HOST": "10.0.0.1"}, "--port", "9100", "--routes", "/a,/b"
    )
    assert config.port == 9100
    assert config.routes == ("/a", "/b")
    assert config.host == "10.0.0.1"


def test_overrides_beat_flags_and_environment_and_are_not_converted() -> None:
    config = load(GatewayConfig, parse_flags("--port", "9100"), environ={"PRISM_PORT": "9000"}, port=7000)
    assert config.port == 7000


def test_unrelated_and_lowercase_variables_are_ignored() -> None:
    config = load_config({"prism_port": "1", "PORT": "2", "PRISM_UNKNOWN": "x", "XPRISM_PORT": "3"})
    assert config.port == 8080


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " true "])
def test_true_spellings(raw: str) -> None:
    assert load_config({"PRISM_COMPRESSION": raw}).compression is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off", " off "])
def test_false_spellings(raw: str) -> None:
    assert load_config({"PRISM_COMPRESSION": "true"}, "--compression", raw).compression is False


@pytest.mark.parametrize(("raw", "value"), [("42", 42), (" 42 ", 42), ("-1", -1), ("1_000", 1000)])
def test_int_parsing(raw: str, value: int) -> None:
    assert load_config({"PRISM_PRESENCE_REPLICAS": raw}).presence_replicas == value


@pytest.mark.parametrize(("raw", "value"), [("3", 3.0), ("0.25", 0.25), ("1e1", 10.0)])
def test_float_parsing(raw: str, value: float) -> None:
    assert load_config({"PRISM_PING_INTERVAL": raw}).ping_interval == value


def test_tuple_parsing_drops_blanks_and_strips() -> None:
    assert load_config({"PRISM_ROUTES": " /a ,/b,, /c"}).routes == ("/a", "/b", "/c")


def test_empty_string_value_for_a_string_setting_is_kept() -> None:
    assert load_config({"PRISM_SUBJECT_PREFIX": ""}).subject_prefix == ""


# -- bad values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PRISM_PORT", "eighty"),
        ("PRISM_PORT", "80.5"),
        ("PRISM_PORT", ""),
        ("PRISM_MAX_ROOMS_PER_CONN", "many"),
        ("PRISM_COMPRESSION", "maybe"),
        ("PRISM_COMPRESSION", ""),
        ("PRISM_REQUEST_TIMEOUT", "soon"),
        ("PRISM_PING_INTERVAL", "20s"),
    ],
)
def test_unparseable_environment_value_names_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable) as caught:
        load_config({variable: raw})
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "raw"), [("--port", "x"), ("--compression", "2"), ("--drain-seconds", "ten")]
)
def test_unparseable_flag_value_names_the_flag(flag: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        load_config({}, flag, raw)


def test_a_number_that_is_not_one_is_named_in_words() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"PRISM_PORT": "8o80", "PRISM_PING_INTERVAL": "20"})
    assert str(caught.value) == "PRISM_PORT='8o80': not a whole number"
    with pytest.raises(ConfigError) as caught:
        load_config({}, "--ping-interval", "20s")
    assert str(caught.value) == "--ping-interval='20s': not a number"


def test_bool_error_lists_the_accepted_spellings() -> None:
    with pytest.raises(ConfigError, match="'true'"):
        load_config({"PRISM_COMPRESSION": "maybe"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRISM_SUBJECT_PREFIX": "acme"}, "prefix"),
        ({"PRISM_SUBJECT_PREFIX": "acme.*."}, "prefix"),
        ({"PRISM_SUBJECT_PREFIX": ".acme."}, "prefix"),
        ({"PRISM_NODE_ID": "n.1"}, "node id"),
        ({"PRISM_NODE_ID": "n 1"}, "node id"),
        ({"PRISM_NODE_ID": "*"}, "node id"),
        ({"PRISM_NODE_ID": "n" * 33}, "node id"),
        ({"PRISM_ROUTES": "ws"}, "routes"),
        ({"PRISM_ROUTES": "/ws,chat"}, "routes"),
        ({"PRISM_ROUTES": ""}, "routes"),
        ({"PRISM_ROUTES": " , "}, "routes"),
        ({"PRISM_PRESENCE_STORAGE": "disk"}, "presence_storage"),
        ({"PRISM_PRESENCE_STORAGE": "File"}, "presence_storage"),
        ({"PRISM_MAX_MESSAGE_BYTES": "0"}, "max_message_bytes"),
        ({"PRISM_MAX_OUTBOUND_BYTES": "-1"}, "max_outbound_bytes"),
        ({"PRISM_MAX_ROOMS_PER_CONN": "0"}, "max_rooms_per_conn"),
        ({"PRISM_MAX_INFLIGHT_REQUESTS": "0"}, "max_inflight_requests"),
        ({"PRISM_REQUEST_TIMEOUT": "0"}, "request_timeout"),
        ({"PRISM_REQUEST_TIMEOUT": "-5"}, "request_timeout"),
        ({"PRISM_REQUEST_TIMEOUT": "nan"}, "request_timeout"),
        ({"PRISM_REQUEST_TIMEOUT": "inf"}, "request_timeout"),
        ({"PRISM_PING_INTERVAL": "-1"}, "ping_interval"),
        ({"PRISM_PING_TIMEOUT": "nan"}, "ping_timeout"),
        ({"PRISM_CLOSE_TIMEOUT": "-3"}, "close_timeout"),
        ({"PRISM_CLOSE_TIMEOUT": "inf"}, "close_timeout"),
        ({"PRISM_DRAIN_SECONDS": "-0.5"}, "drain_seconds"),
        ({"PRISM_PORT": "99999"}, "port must be from 1 to 65535"),
        ({"PRISM_PORT": "65536"}, "port must be from 1 to 65535"),
        ({"PRISM_PORT": "-1"}, "port must be from 1 to 65535"),
    ],
)
def test_validation_refuses_unusable_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)


@pytest.mark.parametrize("prefix", ["", "acme.", "eu.acme."])
def test_valid_prefixes_are_accepted(prefix: str) -> None:
    assert load_config({"PRISM_SUBJECT_PREFIX": prefix}).subject_prefix == prefix


def test_zero_ping_interval_and_drain_are_allowed() -> None:
    config = load_config({"PRISM_PING_INTERVAL": "0", "PRISM_PING_TIMEOUT": "0", "PRISM_DRAIN_SECONDS": "0"})
    assert config.ping_interval == 0
    assert config.drain_seconds == 0


@pytest.mark.parametrize("port", ["0", "1", "65535"])
def test_every_port_number_and_zero_for_any_free_port_are_allowed(port: str) -> None:
    assert load_config({"PRISM_PORT": port}).port == int(port)


def test_empty_node_id_is_allowed() -> None:
    assert load_config({"PRISM_NODE_ID": ""}).node_id == ""


def test_validate_runs_on_direct_overrides_too() -> None:
    with pytest.raises(ConfigError, match="routes"):
        load(GatewayConfig, environ={}, routes=())


# -- derived values and docs -----------------------------------------------------------------------------


def test_nats_servers_splits_and_strips() -> None:
    config = load_config({"PRISM_NATS_URL": " nats://a:4222 ,, nats://b:4222,"})
    assert config.nats_servers == ["nats://a:4222", "nats://b:4222"]


def test_subjects_use_the_configured_prefix() -> None:
    config = load_config({"PRISM_SUBJECT_PREFIX": "acme."})
    assert config.subjects == Subjects("acme.")
    assert config.subjects.room("lobby") == "acme.room.lobby"


def test_random_node_ids_are_valid_and_distinct() -> None:
    ids = {random_node_id() for _ in range(50)}
    assert len(ids) == 50
    for node_id in ids:
        assert validate_node_id(node_id) == node_id


def test_env_and_flag_names() -> None:
    assert env_name("max_rooms_per_conn") == "PRISM_MAX_ROOMS_PER_CONN"
    assert flag_name("max_rooms_per_conn") == "--max-rooms-per-conn"


def test_every_field_has_a_flag_an_env_var_and_help() -> None:
    rows = describe(GatewayConfig)
    fields = dataclasses.fields(GatewayConfig)
    assert len(rows) == len(fields)
    for (env, flag, default, help_text), f in zip(rows, fields, strict=True):
        assert env == env_name(f.name)
        assert flag == flag_name(f.name)
        assert default == repr(f.default)
        assert help_text


def test_every_field_can_be_set_from_its_flag() -> None:
    namespace = parse_flags()
    assert {f.name for f in dataclasses.fields(GatewayConfig)} <= set(vars(namespace))
    assert all(value is None for value in vars(namespace).values())


def test_add_arguments_skips_named_fields() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, GatewayConfig, skip=("port",))
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "1"])


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


# -- the metrics port --------------------------------------------------------------------------------------


def test_metrics_port_is_off_by_default_and_read_from_env_and_flag() -> None:
    assert load_config().metrics_port == 0
    assert load_config({"PRISM_METRICS_PORT": "9090"}).metrics_port == 9090
    assert load_config({}, "--metrics-port", "9100").metrics_port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRISM_METRICS_PORT": "-1"}, "metrics_port must be a port number"),
        ({"PRISM_METRICS_PORT": "65536"}, "metrics_port must be a port number"),
        ({"PRISM_METRICS_PORT": "8080"}, r"metrics_port must differ from port \(8080\)"),
        ({"PRISM_PORT": "9000", "PRISM_METRICS_PORT": "9000"}, "metrics_port must differ"),
    ],
)
def test_unusable_metrics_ports_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)


# -- PRISM_* variables that name no setting --------------------------------------------------------------


def test_a_misspelled_variable_is_named_with_the_nearest_setting() -> None:
    environ = {
        "PRISM_NATS_ULR": "nats://a:4222",
        "PRISM_METRIC_PORT": "9000",  # the notification service's setting: known to every command
        "PRISM_port": "1",
        "PRISM_FROBNICATE": "yes",
        "PRISM_PORT": "8080",  # valid ones, and other variables, say nothing
        "PRISM_LOG_FORMAT": "json",
        "PRISM_ROOM": "lobby",  # the load tests'
        "HOME": "/root",
    }
    assert misspelled(environ) == [
        "PRISM_FROBNICATE is not a Prism setting and is ignored",
        "PRISM_METRIC_PORT is not a Prism setting and is ignored; did you mean PRISM_METRICS_PORT?",
        "PRISM_NATS_ULR is not a Prism setting and is ignored; did you mean PRISM_NATS_URL?",
        "PRISM_port is not a Prism setting and is ignored; did you mean PRISM_PORT?",
    ]


def test_unknown_variables_compares_names_without_the_shared_prefix() -> None:
    # With the prefix, "PRISM_X" would look like half of every name; without it, like none.
    assert unknown_variables({"PRISM_X": "1"}, {"PRISM_PORT", "PRISM_HOST"}) == [
        "PRISM_X is not a Prism setting and is ignored"
    ]


def test_every_setting_of_both_services_is_known() -> None:
    known = known_variables()
    assert env_names(GatewayConfig) <= known
    assert env_names(NotifyConfig) <= known
    assert misspelled({name: "" for name in known}) == []


def test_prism_dev_hands_its_processes_only_variables_prism_reads() -> None:
    environ = {"PRISM_NATS_ULR": "x", "PRISM_PORT": "1", "PATH": "/bin"}
    assert without_unknown(environ) == {"PRISM_PORT": "1", "PATH": "/bin"}
