#!/usr/bin/env python3
"""How fast a tansu broker (memory storage) serves records to a standard consumer, to tell the
broker's limit from the gateway's in the `kafka-read` scenario of bench/run.py.

Starts tansu on --core, writes --records records of --size random bytes to a 3-partition topic
with confluent-kafka (librdkafka), then reads them all back in a new consumer group and prints
records and bytes a second, from the first record read to the last.

  .venv/bin/python bench/broker_read_rate.py --size 15000
  .venv/bin/python bench/broker_read_rate.py --size 15000 --fetch-wait-ms 10
"""

import argparse
import os
import time

from confluent_kafka import Consumer, Producer

from run import start_broker


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=15000, help="bytes per record")
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--core", type=int, default=1, help="the core tansu is pinned to")
    parser.add_argument("--fetch-wait-ms", type=int, default=500,
                        help="the consumer's fetch.wait.max.ms (librdkafka's default: 500)")
    args = parser.parse_args()

    broker, port = start_broker(args.core, topics=("probe",))
    try:
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        value = os.urandom(args.size)
        for i in range(args.records):
            while True:
                try:
                    producer.produce("probe", value, key=str(i).encode())
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        if producer.flush(60):
            raise RuntimeError("the broker did not take every record")

        consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "probe",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": args.fetch_wait_ms})
        consumer.subscribe(["probe"])
        read, started = 0, None
        while read < args.records:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            started = started or time.time()
            read += 1
        elapsed = time.time() - started
        consumer.close()
        print(f"{args.size} B records, fetch.wait.max.ms {args.fetch_wait_ms}: {read / elapsed:,.0f} records/s, {read * args.size / elapsed / 1e6:.1f} MB/s")
    finally:
        broker.terminate()
        broker.wait(timeout=30)


if __name__ == "__main__":
    main()
