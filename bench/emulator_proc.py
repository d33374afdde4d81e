"""The benchmark's server: the bundled emulator in a process of its own (as a real API
would be), driven by JSON lines on stdin:

    {"op": "seed", "records": N}       -> {"dataset_id": ...}
    {"op": "configure", "latency_ms": L, "timestamp_format": F}   (either may be left out)
    {"op": "cpu"}                      -> {"cpu_seconds": user+sys of this process so far}
    {"op": "count", "dataset_id": D}   -> {"records": live records of D}
    {"op": "count_property", "dataset_id": D, "key": K, "value": V}
                                       -> {"records": live records of D whose property K is V}
    {"op": "requests"}                 -> {"requests": {"METHOD template": n}} since the last ask

The first line it prints is {"url": ...}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from localstore_emulator import EmulatorServer, seed_dataset


def main() -> None:
    latency = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    with EmulatorServer(latency_ms=latency) as server:
        print(json.dumps({"url": server.url}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            answer: dict[str, Any]
            if op == "seed":
                answer = {"dataset_id": seed_dataset(server.state, command["records"], seed=command.get("seed", 0))}
            elif op == "configure":
                server.configure(latency_ms=command.get("latency_ms"))
                if "timestamp_format" in command:
                    server.state.timestamp_format = command["timestamp_format"]
                answer = {}
            elif op == "cpu":
                times = os.times()
                answer = {"cpu_seconds": times.user + times.system}
            elif op == "count":
                answer = {"records": len(server.state.list_records(command["dataset_id"]))}
            elif op == "count_property":
                key, value = command["key"], command["value"]
                answer = {"records": sum(
                    1 for r in server.state.list_records(command["dataset_id"])
                    if r["properties"].get(key) == value
                )}
            elif op == "requests":
                counts = dict(server.state.request_counts)
                server.state.reset_counts()
                answer = {"requests": {f"{m} {t}": n for (m, t), n in counts.items()}}
            else:
                answer = {"error": f"unknown op {op}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
