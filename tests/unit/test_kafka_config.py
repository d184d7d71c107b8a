"""KafkaConfig validates up front and never shows secrets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.transport.kafka import (
    KafkaConfig,
    available_codecs,
    crc32c_accelerated,
    dlq_topic,
    murmur2,
)


def test_bootstrap_servers_accept_a_comma_list_or_a_sequence():
    assert KafkaConfig("a:9092, b:9093").servers == ("a:9092", "b:9093")
    assert KafkaConfig(["a:9092"]).client_kwargs()["bootstrap_servers"] == ["a:9092"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"bootstrap_servers": ""}, "bootstrap_servers"),
        ({"bootstrap_servers": "localhost"}, "bootstrap_servers"),
        ({"bootstrap_servers": "h:99999"}, "bootstrap_servers"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "sasl_plain_username"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_plain_username": "u",
            },
            "sasl_plain_password",
        ),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism"),
        ({"ssl_cafile": "/no/such/ca.pem"}, "ssl_cafile"),
        ({"partitions": 0}, "partitions"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"linger_ms": -1}, "linger_ms"),
        ({"batch_size": 0}, "batch_size"),
        ({"compression_type": "brotli"}, "compression_type"),
        ({"request_timeout_ms": 5000}, "request_timeout_ms"),
        ({"heartbeat_interval_ms": 20000}, "heartbeat_interval_ms"),
        ({"auto_offset_reset": "middle"}, "auto_offset_reset"),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(overrides, field):
    args = {"bootstrap_servers": "127.0.0.1:9092", **overrides}
    with pytest.raises(ValueError, match=field):
        KafkaConfig(**args)


def test_password_is_passed_to_the_client_but_never_shown():
    config = KafkaConfig(
        "broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="cdc",
        sasl_plain_password="hunter2",
    )
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert "***" in repr(config)
    assert config.client_kwargs()["sasl_plain_password"] == "hunter2"


def test_gzip_and_no_compression_are_always_available():
    assert {"none", "gzip"} <= set(available_codecs())


def test_from_env_reads_kafka_prefixed_variables():
    config = KafkaConfig.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "h:1", "KAFKA_PARTITIONS": "6", "KAFKA_EXACT_END_OFFSETS": "no"}
    )
    assert (config.servers, config.partitions, config.exact_end_offsets) == (("h:1",), 6, False)
    with pytest.raises(ValueError, match="bootstrap_servers"):
        KafkaConfig.from_env({})


def test_dead_letter_topic_appends_dlq():
    assert dlq_topic("cdc.public.orders") == "cdc.public.orders.dlq"


def test_kafka_python_uses_the_c_crc32c():
    """The crc32c package is a dependency: without it kafka-python computes every record
    batch's CRC32C in pure Python, which cut the Kafka pipeline's throughput about 4x."""
    assert crc32c_accelerated()


@given(st.binary(max_size=64))
def test_murmur2_is_kafkas(data):
    """The transport picks partitions itself: same hash as Kafka's default partitioner."""
    from kafka.partitioner.default import murmur2 as kafka_murmur2

    assert murmur2(data) == kafka_murmur2(data)
