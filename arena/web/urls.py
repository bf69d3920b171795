from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from arena.web import accounts, dashboard, leaderboard, policy_page, releases, sessions

urlpatterns = [
    path("", leaderboard.home, name="web-home"),
    path("leaderboard/", leaderboard.leaderboard_page, name="web-leaderboard"),
    re_path(
        r"^leaderboard/latest\.(?P<fmt>csv|json)$", leaderboard.latest_download, name="web-leaderboard-latest"
    ),
    path("leaderboard/<int:version>.csv", leaderboard.table_csv, name="web-leaderboard-csv"),
    path("leaderboard/<int:version>.json", leaderboard.table_json, name="web-leaderboard-json"),
    path(
        "leaderboard/<int:version>/comparisons.csv", leaderboard.comparisons_csv, name="web-comparisons-csv"
    ),
    path("leaderboard/<int:version>/fitted.csv", leaderboard.fitted_csv, name="web-fitted-csv"),
    path("methodology/", leaderboard.methodology_page, name="web-methodology"),
    path("policies/<slug:slug>/", policy_page.policy_page, name="web-policy"),
    path("sessions/", sessions.session_list, name="web-sessions"),
    path("releases/", releases.release_list, name="web-releases"),
    path("releases/<int:version>/", releases.release_page, name="web-release"),
    path("releases/<int:version>.tar", releases.release_archive, name="web-release-archive"),
    path("releases/<int:version>/files/<path:path>", releases.release_file, name="web-release-file"),
    path("sessions/<uuid:session_id>/", sessions.session_page, name="web-session"),
    path("me/", dashboard.dashboard, name="web-me"),
    path("me/policies/", dashboard.policy_register_submit, name="web-policy-register"),
    path("me/notifications/", dashboard.notification_settings_submit, name="web-notifications"),
    path("me/policies/<slug:slug>/retire/", dashboard.policy_retire_submit, name="web-policy-retire"),
    path("me/labs/<slug:lab_slug>/keys/", dashboard.key_issue_submit, name="web-key-issue"),
    path(
        "me/labs/<slug:lab_slug>/keys/<str:prefix>/revoke/",
        dashboard.key_revoke_submit,
        name="web-key-revoke",
    ),
    path("accounts/login/", dashboard.sign_in, name="web-login"),
    path(
        "accounts/set-password/<uidb64>/<token>/", accounts.PasswordSetView.as_view(), name="web-password-set"
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="web-leaderboard"), name="web-logout"),
]
