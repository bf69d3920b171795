from arena.models.accounts import ACTION_SPACES, ApiKey, KeyUse, Lab, Organization, Robot
from arena.models.policies import Policy, PolicyCheck
from arena.models.records import ComparisonTally, IdempotencyRecord, RankingSnapshot, Release
from arena.models.relay import PolicyIncident, RelayAttachment
from arena.models.sessions import SLOTS, Episode, EvaluationSession, Preference, Trajectory, Video

__all__ = [
    "ACTION_SPACES",
    "SLOTS",
    "ApiKey",
    "ComparisonTally",
    "EvaluationSession",
    "Episode",
    "IdempotencyRecord",
    "KeyUse",
    "Lab",
    "Organization",
    "Policy",
    "PolicyCheck",
    "PolicyIncident",
    "Preference",
    "RankingSnapshot",
    "RelayAttachment",
    "Release",
    "Robot",
    "Trajectory",
    "Video",
]
