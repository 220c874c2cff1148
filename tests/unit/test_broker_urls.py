"""The RabbitMQ URL fleetpay hands dramatiq: pika's defaults added where the operator set none, for
each node of a ``;``-separated cluster list, the operator's own values and the vhost kept."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pika

from workers.broker import AMQP_DEFAULTS, amqp_url, is_rabbitmq


def test_defaults_fill_in_what_the_url_does_not_say() -> None:
    url = amqp_url("amqp://fleetpay:s3cr%2Ft@rabbit:5672/%2F?heartbeat=10")
    parts = urlsplit(url)
    assert parts.path == "/%2F" and parts.password == "s3cr%2Ft"
    query = {key: value for key, [value] in parse_qs(parts.query).items()}
    assert query == {**AMQP_DEFAULTS, "heartbeat": "10"}
    parameters = pika.URLParameters(url)
    assert (parameters.virtual_host, parameters.credentials.password, parameters.heartbeat) == ("/", "s3cr/t", 10)
    assert parameters.blocked_connection_timeout == float(AMQP_DEFAULTS["blocked_connection_timeout"])


def test_each_node_of_a_cluster_gets_them() -> None:
    nodes = amqp_url("amqp://u:p@node1/fleetpay;amqp://u:p@node2/fleetpay?heartbeat=10").split(";")
    assert [urlsplit(node).hostname for node in nodes] == ["node1", "node2"]
    assert [pika.URLParameters(node).heartbeat for node in nodes] == [int(AMQP_DEFAULTS["heartbeat"]), 10]


def test_the_scheme_chooses_the_broker() -> None:
    assert is_rabbitmq("amqp://h/v") and is_rabbitmq("AMQPS://h/v")
    assert not is_rabbitmq("redis://127.0.0.1:6379/0") and not is_rabbitmq("rediss://h:6380/0")
