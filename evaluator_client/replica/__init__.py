"""A MuJoCo real-to-sim tabletop replica implementing the :class:`~evaluator_client.robot.Robot` protocol."""

from evaluator_client.replica.env import ACTION_SPACES, NATIVE_RESOLUTION, Replica, ReplicaError
from evaluator_client.replica.perturb import AXES, PerturbationError
from evaluator_client.replica.scene import Scene, SceneError, load_scene
from evaluator_client.replica.tasks import TASK_KINDS, TaskSpec, UnknownTaskError, task_from_instruction

__all__ = [
    "ACTION_SPACES",
    "NATIVE_RESOLUTION",
    "AXES",
    "TASK_KINDS",
    "PerturbationError",
    "Replica",
    "ReplicaError",
    "Scene",
    "SceneError",
    "TaskSpec",
    "UnknownTaskError",
    "load_scene",
    "task_from_instruction",
]
