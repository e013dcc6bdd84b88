#!/usr/bin/env python3
"""A downstream subscriber with nothing from zcdp: Confluent's own Python client and its stock
AvroDeserializer, resolving schema ids through the gateway's registry API. Prints each record of
a topic as a JSON line. Used by the end-to-end test; handy to peek at a running `zcdp up` too:

    python3 -m venv .venv && .venv/bin/pip install 'confluent-kafka[avro,schemaregistry]'
    .venv/bin/python scripts/stock-client.py --bootstrap 127.0.0.1:PORT \
        --registry http://127.0.0.1:8080 --topic zmp.views.v1 --count 10
"""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": f"stock-client-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([a.topic])
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": a.registry}))
    seen = 0
    deadline = time.time() + a.timeout
    while seen < a.count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            print(f"consumer error: {msg.error()}", file=sys.stderr)
            continue
        value = deserialize(msg.value(), SerializationContext(a.topic, MessageField.VALUE))
        schema_id = int.from_bytes(msg.value()[1:5], "big")
        print(json.dumps({"key": msg.key().decode(), "schema_id": schema_id, "value": value}, ensure_ascii=False, default=str), flush=True)
        seen += 1
    consumer.close()
    if seen < a.count:
        print(f"read {seen} of {a.count} records within {a.timeout}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
