"""The public, read-only leaderboard."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from arena.api.base import ApiView
from arena.selectors.leaderboard import leaderboard, snapshot_latest


class LeaderboardRowOut(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    organization = serializers.CharField()
    license = serializers.CharField()
    open_weights = serializers.BooleanField()
    status = serializers.CharField()
    score = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    rank = serializers.IntegerField(help_text="The best rank the data allow (rank_low).")
    rank_low = serializers.IntegerField(
        required=False, help_text="95% rank band, family-wise over the board."
    )
    rank_high = serializers.IntegerField(required=False)
    anchor = serializers.BooleanField(
        required=False, help_text="The scale anchor: its score is fixed at 1000."
    )
    group = serializers.IntegerField(
        required=False, help_text="Connected component of the comparison graph; ranks are within a group."
    )
    n_comparisons = serializers.IntegerField()
    win_rate = serializers.FloatField()
    provisional = serializers.BooleanField()
    n_labs = serializers.IntegerField()
    mean_progress = serializers.FloatField(allow_null=True)
    last_evaluated = serializers.DateTimeField(allow_null=True)


class LeaderboardOut(serializers.Serializer):
    snapshot = serializers.IntegerField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    method = serializers.CharField(allow_null=True)
    n_comparisons = serializers.IntegerField()
    rows = LeaderboardRowOut(many=True)
    provisional = LeaderboardRowOut(many=True)
    order_effect = serializers.FloatField(
        allow_null=True, help_text="Log-odds advantage of slot A (ran first), nats; removed from the scores."
    )
    order_effect_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True)


class LeaderboardView(ApiView):
    @extend_schema(
        operation_id="leaderboard",
        summary="The public ranking (newest snapshot)",
        responses={200: LeaderboardOut},
    )
    def get(self, request):
        return Response(leaderboard(snapshot_latest()))
