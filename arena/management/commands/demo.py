"""``manage.py demo``: the whole network on this machine, end to end, through the real HTTP API.

Serves the graded replica baselines on loopback, starts the blind relay and the web server, registers the
baselines as an owner would, lets three evaluator labs run sessions in the MuJoCo replica with the automatic
judge (the real ``arena-eval`` code path: relay, episodes, video and trajectory uploads, preferences), refits the
ranking after each preference, prints the leaderboard beside the baselines' true order, and ends with a data
release of the published sessions (the baselines publish their episodes; one lab publishes its reasons, one its
name).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import threading
import time
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from scipy.stats import kendalltau

from arena.models import Policy
from arena.ports import port_in_use
from arena.services.accounts import (
    api_key_issue,
    lab_get_or_create,
    lab_publication_update,
    owner_get_or_create,
)

LABS = ("Berkeley Robot Lab", "Stanford Manipulation", "Tokyo Embodied AI")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Command(BaseCommand):
    help = "Run the whole network on this machine and print the leaderboard beside the baselines' true order."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--sessions", type=int, default=60, help="evaluation sessions in all (default 60)"
        )
        parser.add_argument(
            "--max-steps", type=int, default=400, help="steps per episode at 15 Hz (default 400)"
        )
        parser.add_argument(
            "--port", type=int, default=8000, help="web server port (default 8000; 0 = any free)"
        )
        parser.add_argument(
            "--serve", action="store_true", help="keep serving the pages afterwards (Ctrl-C stops)"
        )
        parser.add_argument("--seed", type=int, default=7, help="seed of the scenes and the task sequence")

    def handle(
        self, *args, sessions: int, max_steps: int, port: int, serve: bool, seed: int, **options
    ) -> None:
        from policy_server.baselines import BASELINES, TRUE_ORDER, make_baseline
        from policy_server.relay import serve_relay_in_thread
        from policy_server.server import serve_in_thread

        # The servers' per-connection INFO lines would bury the progress lines; warnings and errors still show.
        logging.disable(logging.INFO)
        if port and port_in_use(port):  # before migrating: say it at once
            raise CommandError(_port_busy(port))
        started = time.perf_counter()
        self._say("1/5 database: migrating")
        call_command("migrate", interactive=False, verbosity=0)
        if Policy.objects.exists():
            raise CommandError(
                "this database already holds policies: run the demo on a fresh one (make demo uses var/demo/)"
            )
        with contextlib.ExitStack() as stack:
            servers = {}
            for k, name in enumerate(TRUE_ORDER):
                servers[name] = stack.enter_context(serve_in_thread(make_baseline(name, seed=seed + k)))
            # The baselines listen on loopback: this demo's arena and relay may connect there (a deployment's
            # default is public addresses only).
            settings.ARENA_ENDPOINT_ALLOW = "loopback"
            try:
                web = ThreadedWSGIServer(("127.0.0.1", port), QuietHandler)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise CommandError(_port_busy(port)) from None
            web.set_app(get_wsgi_application())
            threading.Thread(target=web.serve_forever, daemon=True).start()
            stack.callback(web.shutdown)
            url = f"http://127.0.0.1:{web.server_address[1]}"
            settings.ARENA_PUBLIC_URL = url
            # The relay asks this web server to admit each connection and polls it for closed sessions.
            relay = stack.enter_context(
                serve_relay_in_thread(settings.ARENA_RELAY_SECRET, arena_url=url, endpoint_allow="loopback")
            )
            settings.ARENA_RELAY_URL = relay.url.rstrip("/")
            self._say(f"2/5 serving: web {url}, relay {relay.url}, {len(servers)} baseline policy servers")

            owner_key = api_key_issue(
                user=owner_get_or_create(username="baselines", organization="Arena Baselines")
            )
            for name in TRUE_ORDER:
                response = requests.post(
                    f"{url}/api/v1/policies/",
                    json={
                        "slug": f"baseline-{name}",
                        "name": f"Baseline: {name}",
                        "endpoint_url": servers[name].url,
                        "description": BASELINES[name],
                        "license": "Apache-2.0",
                        "open_weights": True,
                    },
                    headers={"Authorization": f"Api-Key {owner_key.plaintext}"},
                    timeout=60,
                )
                body = response.json()
                if response.status_code != 201 or body["status"] != "active":
                    raise CommandError(f"baseline {name} did not register: {body}")
                # The baselines publish their episodes (videos and trajectories): the browser and the release.
                published = requests.patch(
                    f"{url}/api/v1/policies/baseline-{name}/",
                    json={"videos_public": True},
                    headers={"Authorization": f"Api-Key {owner_key.plaintext}"},
                    timeout=60,
                )
                if published.status_code != 200:
                    raise CommandError(f"baseline {name} could not publish its episodes: {published.json()}")
            self._say(f"3/5 registered {len(TRUE_ORDER)} baselines; all passed their health check")

            homes = self._labs(url)
            self._run_sessions(homes, sessions, max_steps, seed)

            board = requests.get(f"{url}/api/v1/leaderboard/", timeout=30).json()
            self._print_board(board, TRUE_ORDER)
            self._release(url)
            self._say(
                f"done in {time.perf_counter() - started:.0f} s. Open {url}/leaderboard/ "
                f"(API: {url}/api/v1/leaderboard/, docs: {url}/api/docs/)"
            )
            if serve:
                self._say("serving until Ctrl-C")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)

    def _release(self, url: str) -> None:
        from arena.models import Release
        from arena.tasks import release_build

        release = Release.objects.get(version=release_build.delay().get())
        self._say(
            f"\nRelease v{release.version} of snapshot {release.snapshot.version}: {release.n_sessions} sessions, "
            f"{release.size_bytes / 1e6:.1f} MB, built in {release.build_seconds:.1f} s, data hash "
            f"{release.data_hash[:16]}... Browse {url}/sessions/, download {url}/releases/{release.version}/"
        )

    def _labs(self, url: str) -> list[Path]:
        from evaluator_client.cli import main as arena_eval

        homes = []
        for k, name in enumerate(LABS):
            lab = lab_get_or_create(name=name)
            # Consent varies between labs, as it will: the first publishes its reasons, the second its name.
            lab_publication_update(lab=lab, publish_reasons=k == 0, publish_name=k == 1)
            key = api_key_issue(lab=lab).plaintext
            home = Path(settings.VAR_DIR) / "labs" / name.lower().replace(" ", "-")
            with contextlib.redirect_stdout(io.StringIO()):
                code = arena_eval(
                    [
                        "--home",
                        str(home),
                        "configure",
                        "--server",
                        url,
                        "--key",
                        key,
                        "--robot",
                        "replica-1",
                        "--platform",
                        "replica:tabletop-v1",
                    ]
                )
            if code != 0:
                raise CommandError(f"could not configure the client of {name}")
            homes.append(home)
        self._say(f"4/5 labs: {', '.join(LABS)} (each a replica robot and arena-eval configured)")
        return homes

    def _run_sessions(self, homes: list[Path], sessions: int, max_steps: int, seed: int) -> None:
        from evaluator_client import config as config_mod
        from evaluator_client.api import ArenaApi
        from evaluator_client.cli import replica_setup
        from evaluator_client.judge import AutoJudge
        from evaluator_client.runner import RunOptions, run_session
        from evaluator_client.spool import Spool

        self._say(
            f"5/5 running {sessions} sessions ({max_steps} steps per episode, replica, automatic judge)"
        )
        options = RunOptions(max_steps=max_steps, show_progress=False, stop_on_success_steps=10)
        clients = []
        for k, home in enumerate(homes):
            config = config_mod.load(home)
            clients.append(
                (
                    ArenaApi(config.server_url, config.api_key),
                    Spool(home),
                    config,
                    *replica_setup(config, seed=seed + k),
                )
            )
        t0 = time.perf_counter()
        counts = {"submitted": 0, "aborted": 0}
        for n in range(sessions):
            api, spool, config, make_robot, next_task = clients[n % len(clients)]
            task, category = next_task(n)
            lines: list[str] = []
            outcome = run_session(
                api=api,
                spool=spool,
                robot_name=config.robot.name,
                make_robot=make_robot,
                judge=AutoJudge(margin=10),
                task=task,
                task_category=category,
                seed=seed * 1000 + n,
                options=options,
                log=lines.append,
            )
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.reveal:
                a, b = outcome.reveal["A"]["slug"], outcome.reveal["B"]["slug"]
                verdict = {"A": f"{a} beat {b}", "B": f"{b} beat {a}", "tie": f"{a} tied {b}"}[outcome.choice]
                progress = f"progress {outcome.progress['A']}/{outcome.progress['B']}"
            else:
                verdict, progress = outcome.status, outcome.message
            elapsed = time.perf_counter() - t0
            self._say(
                f"  [{n + 1:>3}/{sessions}] {LABS[n % len(LABS)][:22]:<22} {category:<10} {verdict:<44} "
                f"{progress}  ({elapsed:.0f} s)"
            )
        for api, *_ in clients:
            api.close()
        self._say(f"  sessions: {counts}")

    def _print_board(self, board: dict, true_order: list[str]) -> None:
        rows = board["rows"] + board["provisional"]
        self._say(f"\nLeaderboard (snapshot {board['snapshot']}, {board['n_comparisons']} comparisons)")
        self._say(f"{'rank':>4}  {'policy':<20} {'score':>7} {'95% CI':>17} {'comparisons':>11}   true rank")
        for row in sorted(rows, key=lambda r: -r["score"]):
            name = row["slug"].removeprefix("baseline-")
            ci = f"[{row['ci_low']:.0f}, {row['ci_high']:.0f}]"
            self._say(
                f"{row['rank']:>4}  {row['slug']:<20} {row['score']:>7.0f} {ci:>17} {row['n_comparisons']:>11}"
                f"   {true_order.index(name) + 1}{'  (provisional)' if row['provisional'] else ''}"
            )
        by_score = [r["slug"].removeprefix("baseline-") for r in sorted(rows, key=lambda r: -r["score"])]
        tau = kendalltau([true_order.index(n) for n in by_score], range(len(by_score))).statistic
        verdict = "recovered exactly" if by_score == true_order else f"Kendall tau {tau:.2f}"
        self._say(f"True order: {' > '.join(true_order)}\nRanked:     {' > '.join(by_score)}  ({verdict})")

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()


def _port_busy(port: int) -> str:
    return (
        f"port {port} is already in use on 127.0.0.1: stop what listens there, or pick another port "
        "(make demo DEMO_ARGS='--port 8001', or --port 0 for any free one)"
    )
