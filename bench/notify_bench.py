"""Notification latency and completeness on PostgreSQL, with a same-run write baseline.

Set-up: `kizuna serve` on a fresh schema, 1,000 river gauges, 1,000 subscriptions:
900 watch one gauge each (`entities: [{type, id}]`, watchedAttributes level) and 100
watch the type with a q (`level==j`), each to its own HTTP endpoint on a receiver
process (asyncio, keep-alive, records arrival times).

1. Write throughput without subscriptions: batch upserts (100 gauges each) from two
   clients as fast as they go for --burst seconds.
2. Paced load: 1,000 gauge updates/s (a batch of 100 every 100 ms) for --seconds
   (60 by default). For each notification: latency = receipt - the write's
   acknowledgement; delivered / due, where due is computed from the updates sent.
3. Write throughput again, now with the 1,000 subscriptions (and their deliveries).

Prints p50 / p99 latency, delivered / due, and the with/without throughput ratio.

    python bench/notify_bench.py [--seconds 60] [--burst 10] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import kizuna_server, percentile, pg_schema, schema_url  # noqa: E402

GAUGES = 1000
ID_SUBS = 900
TYPE_SUBS = 100
BATCH = 100

RECEIVER = textwrap.dedent(
    """
    import asyncio, json, signal, sys, time
    records = []

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                now = time.time()
                writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n")
                note = json.loads(body)
                for entity in note["data"]:
                    records.append((note["id"], note["subscriptionId"], entity["seq"]["value"], now))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()
        with open(sys.argv[2], "w") as out:
            json.dump(records, out)

    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gauge(n: int, level: int, seq: int) -> dict:
    return {
        "id": f"urn:ngsi-ld:RiverGauge:{n:04d}",
        "type": "RiverGauge",
        "level": {"type": "Property", "value": level, "unitCode": "CMT"},
        "seq": {"type": "Property", "value": seq},
    }


async def burst(base: str, seconds: float) -> float:
    """Gauge updates per second from two clients upserting batches back to back."""
    rng = random.Random(3)
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(timeout=60) as http:
            while time.monotonic() < deadline:
                start = rng.randrange(0, GAUGES - BATCH)
                # Levels >= 1000 (and seq -1) wake only the per-gauge subscriptions.
                body = [gauge(start + i, 1000 + i, -1) for i in range(BATCH)]
                r = await http.post(
                    f"{base}/entityOperations/upsert?options=update",
                    content=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
                r.raise_for_status()
                done += BATCH

    began = time.monotonic()
    await asyncio.gather(client(), client())
    return done / (time.monotonic() - began)


async def paced(base: str, seconds: float, rate: int) -> tuple[dict[int, float], int]:
    """``rate`` updates/s in batches of BATCH; returns seq -> ack time and the due count."""
    rng = random.Random(11)
    acked: dict[int, float] = {}
    due = 0
    seq = 0
    interval = BATCH / rate
    tasks = []
    limit = asyncio.Semaphore(8)  # at most 8 writes in flight; a slow server stretches the phase
    async with httpx.AsyncClient(timeout=300) as http:

        async def send(body: list[dict], seqs: list[int]) -> None:
            async with limit:
                r = await http.post(
                    f"{base}/entityOperations/upsert?options=update",
                    content=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
            r.raise_for_status()
            now = time.time()
            for s in seqs:
                acked[s] = now

        began = time.monotonic()
        batches = int(seconds * rate / BATCH)
        for b in range(batches):
            await asyncio.sleep(max(0.0, began + b * interval - time.monotonic()))
            body, seqs = [], []
            for n in rng.sample(range(GAUGES), BATCH):
                level = rng.randrange(0, 1000)
                body.append(gauge(n, level, seq))
                seqs.append(seq)
                due += (n < ID_SUBS) + (level < TYPE_SUBS)
                seq += 1
            tasks.append(asyncio.create_task(send(body, seqs)))
        await asyncio.gather(*tasks)
    return acked, due


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="paced phase length")
    parser.add_argument("--rate", type=int, default=1000, help="gauge updates per second")
    parser.add_argument("--burst", type=float, default=10.0, help="throughput phase length")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--drain", type=float, default=30.0, help="max wait for stragglers")
    args = parser.parse_args()

    rport, sport = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="kizuna-notify-bench-"))
    records_path = workdir / "received.json"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(rport), str(records_path)])
    try:
        with pg_schema() as schema, kizuna_server(schema_url(schema), sport, args.workers):
            base = f"http://127.0.0.1:{sport}/ngsi-ld/v1"
            http = httpx.Client(timeout=60)
            seed = [gauge(n, 0, -1) for n in range(GAUGES)]
            for i in range(0, GAUGES, 500):
                http.post(
                    f"{base}/entityOperations/upsert", json=seed[i : i + 500]
                ).raise_for_status()

            without = asyncio.run(burst(base, args.burst))
            print(f"write throughput without subscriptions: {without:,.0f} updates/s")

            for n in range(ID_SUBS):
                http.post(
                    f"{base}/subscriptions",
                    json={
                        "id": f"urn:ngsi-ld:Subscription:gauge:{n}",
                        "type": "Subscription",
                        "entities": [
                            {"type": "RiverGauge", "id": f"urn:ngsi-ld:RiverGauge:{n:04d}"}
                        ],
                        "watchedAttributes": ["level"],
                        "notification": {
                            "endpoint": {"uri": f"http://127.0.0.1:{rport}/gauge/{n}"},
                            "attributes": ["level", "seq"],
                        },
                    },
                ).raise_for_status()
            for j in range(TYPE_SUBS):
                http.post(
                    f"{base}/subscriptions",
                    json={
                        "id": f"urn:ngsi-ld:Subscription:level:{j}",
                        "type": "Subscription",
                        "entities": [{"type": "RiverGauge"}],
                        "watchedAttributes": ["level"],
                        "q": f"level=={j}",
                        "notification": {
                            "endpoint": {"uri": f"http://127.0.0.1:{rport}/level/{j}"},
                            "attributes": ["level", "seq"],
                        },
                    },
                ).raise_for_status()
            print(f"{ID_SUBS + TYPE_SUBS} subscriptions created")

            began = time.time()
            acked, due = asyncio.run(paced(base, args.seconds, args.rate))
            print(f"paced phase: {len(acked)} updates in {time.time() - began:.1f} s, {due} due")

            # Wait until the outbox is empty (or the drain limit).
            import psycopg

            deadline = time.time() + args.drain
            with psycopg.connect(
                f"host=127.0.0.1 user=postgres dbname=test options=-csearch_path={schema}",
                autocommit=True,
            ) as conn:
                pending = -1
                while time.time() < deadline:
                    pending = conn.execute("SELECT count(*) FROM subscription_outbox").fetchone()[0]
                    if pending == 0:
                        break
                    time.sleep(0.5)
                print(f"outbox after the paced phase: {pending} rows")

            with_subs = asyncio.run(burst(base, args.burst))
            print(
                f"write throughput with {ID_SUBS + TYPE_SUBS} subscriptions: {with_subs:,.0f} updates/s"
            )
            http.close()
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=60)

    records = json.loads(records_path.read_text())
    first: dict[tuple[str, int], float] = {}
    for _nid, sub_id, seq, at in records:
        if seq >= 0:
            key = (sub_id, seq)
            first[key] = min(first.get(key, at), at)
    latencies = [at - acked[seq] for (_sub, seq), at in first.items() if seq in acked]
    delivered = len(first)
    print()
    print(f"notifications due {due}, delivered {delivered} (distinct), ratio {delivered / due:.4f}")
    if latencies:
        print(
            "latency write-ack -> receipt: "
            f"p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms"
        )
    print(f"write throughput with / without subscriptions: {with_subs / without:.2f}")


if __name__ == "__main__":
    main()
