from arena.models.accounts import ACTION_SPACES, ApiKey, KeyUse, Lab, Organization, Robot
from arena.models.notifications import NotificationDelivery, NotificationSettings
from arena.models.policies import Policy, PolicyCheck
from arena.models.records import ComparisonTally, IdempotencyRecord, RankingSnapshot, Release
from arena.models.relay import PolicyDialout, PolicyIncident, RelayAttachment
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
    "NotificationDelivery",
    "NotificationSettings",
    "Organization",
    "Policy",
    "PolicyCheck",
    "PolicyIncident",
    "Preference",
    "RankingSnapshot",
    "PolicyDialout",
    "RelayAttachment",
    "Release",
    "Robot",
    "Trajectory",
    "Video",
]
