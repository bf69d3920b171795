"""Runs inside var/venvs/openpi-client: drives a server with the PyPI openpi-client, prints a JSON report.

python openpi_client_probe.py --url ws://127.0.0.1:PORT [--api-key K] [--steps N] [--prompt P]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def droid_observation(step: int, prompt: str) -> dict:
    image = np.full((224, 224, 3), step % 256, dtype=np.uint8)
    return {
        "observation/exterior_image_1_left": image,
        "observation/wrist_image_left": image,
        "observation/joint_position": np.full(7, float(step)),
        "observation/cartesian_position": np.zeros(6),
        "observation/gripper_position": np.array([0.25]),
        "prompt": prompt,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompt", default="put the marker in the cup")
    args = parser.parse_args()
    client = WebsocketClientPolicy(host=args.url, api_key=args.api_key)
    report: dict = {"numpy": np.__version__, "metadata": client.get_server_metadata(), "replies": []}
    try:
        for step in range(args.steps):
            reply = client.infer(droid_observation(step, args.prompt))
            actions = reply["actions"]
            report["replies"].append(
                {
                    "shape": list(actions.shape),
                    "dtype": actions.dtype.str,
                    "first_row": actions[0].tolist(),
                    "server_timing": sorted(reply.get("server_timing", {})),
                }
            )
    except RuntimeError as exc:
        report["error"] = str(exc)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
