from django.urls import path

from arena.api import accounts, leaderboard, notifications, policies, relay, sessions, trajectories, videos

urlpatterns = [
    path("me/", accounts.MeView.as_view(), name="api-me"),
    path("me/notifications/", notifications.NotificationSettingsView.as_view(), name="api-notifications"),
    path(
        "me/notifications/deliveries/",
        notifications.NotificationDeliveriesView.as_view(),
        name="api-notification-deliveries",
    ),
    path("keys/", accounts.KeyListView.as_view(), name="api-keys"),
    path("keys/<str:prefix>/revoke/", accounts.KeyRevokeView.as_view(), name="api-key-revoke"),
    path("robots/", accounts.RobotListView.as_view(), name="api-robots"),
    path("lab/", accounts.LabPublicationView.as_view(), name="api-lab"),
    path("policies/", policies.PolicyListView.as_view(), name="api-policies"),
    path("policies/<slug:slug>/", policies.PolicyDetailView.as_view(), name="api-policy"),
    path("policies/<slug:slug>/retire/", policies.PolicyRetireView.as_view(), name="api-policy-retire"),
    path("policies/<slug:slug>/checks/", policies.PolicyChecksView.as_view(), name="api-policy-checks"),
    path(
        "policies/<slug:slug>/incidents/",
        relay.PolicyIncidentsView.as_view(),
        name="api-policy-incidents",
    ),
    path("sessions/", sessions.SessionListView.as_view(), name="api-sessions"),
    path("sessions/<uuid:session_id>/", sessions.SessionDetailView.as_view(), name="api-session"),
    path("sessions/<uuid:session_id>/episodes/", sessions.EpisodeReportView.as_view(), name="api-episodes"),
    path(
        "sessions/<uuid:session_id>/preference/",
        sessions.PreferenceSubmitView.as_view(),
        name="api-preference",
    ),
    path("sessions/<uuid:session_id>/abort/", sessions.SessionAbortView.as_view(), name="api-abort"),
    path("sessions/<uuid:session_id>/videos/", videos.VideoStartView.as_view(), name="api-videos"),
    path("videos/<uuid:video_id>/", videos.VideoDetailView.as_view(), name="api-video"),
    path("videos/<uuid:video_id>/finish/", videos.VideoFinishView.as_view(), name="api-video-finish"),
    path(
        "sessions/<uuid:session_id>/trajectories/",
        trajectories.TrajectoryStartView.as_view(),
        name="api-trajectories",
    ),
    path(
        "trajectories/<uuid:trajectory_id>/",
        trajectories.TrajectoryDetailView.as_view(),
        name="api-trajectory",
    ),
    path(
        "trajectories/<uuid:trajectory_id>/finish/",
        trajectories.TrajectoryFinishView.as_view(),
        name="api-trajectory-finish",
    ),
    path("leaderboard/", leaderboard.LeaderboardView.as_view(), name="api-leaderboard"),
    path("relay/admit/", relay.RelayAdmitView.as_view(), name="api-relay-admit"),
    path("relay/status/", relay.RelayStatusView.as_view(), name="api-relay-status"),
    path("relay/release/", relay.RelayReleaseView.as_view(), name="api-relay-release"),
    path("relay/incidents/", relay.RelayIncidentView.as_view(), name="api-relay-incidents"),
    path("relay/attach/", relay.RelayDialoutAttachView.as_view(), name="api-relay-attach"),
    path("relay/detach/", relay.RelayDialoutDetachView.as_view(), name="api-relay-detach"),
    path("relay/locate/", relay.RelayDialoutLocateView.as_view(), name="api-relay-locate"),
    path("relay/dialout/", relay.DialoutRelayView.as_view(), name="api-relay-dialout"),
]
