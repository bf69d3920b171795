"""Runs inside var/venvs/openpi-server: serves an echo policy with the PyPI openpi-server, as a peer to test.

    python openpi_server_echo.py --port PORT [--metadata-json '{...}']

The policy refuses requests carrying ``endpoint`` (an openpi server passes every key to its policy, so a
client must not send one) and raises when the prompt is ``"explode"``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from openpi_client.base_policy import BasePolicy
from openpi_server import WebsocketPolicyServer


class EchoPolicy(BasePolicy):
    def infer(self, obs: dict) -> dict:
        if "endpoint" in obs:
            raise ValueError("an openpi policy received an 'endpoint' key")
        if obs.get("prompt") == "explode":
            raise RuntimeError("echo policy asked to explode")
        state = np.concatenate([obs["observation/joint_position"], obs["observation/gripper_position"]])
        return {"actions": np.tile(state, (10, 1)).astype(np.float32)}

    def reset(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metadata-json", default="{}")
    args = parser.parse_args()
    server = WebsocketPolicyServer(
        EchoPolicy(), host="127.0.0.1", port=args.port, metadata=json.loads(args.metadata_json)
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
