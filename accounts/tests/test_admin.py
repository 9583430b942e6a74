"""The admin: who gets in, every model's pages open, and the session actions use sessions_app.actions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from uuid import uuid4

import django_rq
import django_rq.settings
import pytest
import rq
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.contrib.sites.models import Site
from django.db.models import Model
from django.test import RequestFactory
from django.urls import URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern
from django.utils import timezone

from accounts.models import GIB, SiteAppearance, UserQuota
from api.models import ApiToken
from audit.records import record
from consoles.models import TerminalRecording
from judge.models import Attempt, HintRequest, StepRun
from labs.models import Image, Lab, LabStep, Tag
from preview.models import PreviewShare
from sessions_app import jobs, live
from sessions_app.models import EndReason, HousekeepingPass, RunnerCapacity, Session, SessionEvent, State
from vms.models import Snapshot
from watchdog.models import Alert, SessionSample

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("accounts", "labs", "sessions_app", "judge")
# Models whose admin is a view onto something else (django-rq's dashboard reads Redis, not a table).
ADMIN_MODELS = sorted(
    (model for model in admin.site._registry if model._meta.managed),
    key=lambda model: model._meta.label,
)


def admin_url(model: type[Model] | Model, view: str, *args: Any) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def make_session(user: Any, lab: Lab, state: str = State.RUNNING, **fields: Any) -> Session:
    now = timezone.now()
    defaults: dict[str, Any] = {"runner_name": "fake", "started_at": now, "expires_at": now + timedelta(minutes=30)}
    if state in (State.STOPPED, State.FAILED, State.EXPIRED):
        defaults["ended_at"] = now
    return Session.objects.create(user=user, lab=lab, state=state, **{**defaults, **fields})


def shown_messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def teardowns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-in for the teardown job (another module's work): records the sessions it is called for."""
    calls: list[str] = []
    monkeypatch.setattr(jobs, "teardown_session", calls.append)
    return calls


@pytest.fixture
def one_of_each(owner, staff_user, lab) -> dict[str, Model]:
    """An object for every model the admin shows, keyed by model label."""
    social_app = SocialApp.objects.create(provider="github", name="GitHub", client_id="id", secret="secret")
    social_account = SocialAccount.objects.create(user=owner, provider="github", uid="583231", extra_data={})
    session = make_session(owner, lab)
    return {
        "auth.User": staff_user,
        "auth.Group": Group.objects.create(name="mentors"),
        "sites.Site": Site.objects.get(pk=1),
        "account.EmailAddress": EmailAddress.objects.create(user=owner, email=owner.email, primary=True),
        "socialaccount.SocialApp": social_app,
        "socialaccount.SocialAccount": social_account,
        "socialaccount.SocialToken": SocialToken.objects.create(app=social_app, account=social_account, token="t"),
        "accounts.UserQuota": UserQuota.for_user(owner),
        "accounts.SiteAppearance": SiteAppearance.load(),
        "labs.Image": lab.image,
        "labs.Tag": Tag.objects.create(name="linux"),
        "labs.Lab": lab,
        "labs.LabStep": lab.steps.get(),
        "sessions_app.Session": session,
        "sessions_app.SessionEvent": session.log("Provisioned."),
        "preview.PreviewShare": PreviewShare.objects.create(
            session=session, port=8080, created_by=owner, expires_at=timezone.now() + timedelta(hours=1)
        ),
        "consoles.TerminalRecording": TerminalRecording.objects.create(
            session=session, terminal_name="1", file="recordings/example.cast"
        ),
        "vms.Snapshot": Snapshot.objects.create(owner=owner, lab=lab, name="before exam"),
        "judge.Attempt": Attempt.objects.create(user=owner, session=session, lab=lab),
        "judge.HintRequest": HintRequest.objects.create(user=owner, session=session),
        "judge.StepRun": StepRun.objects.create(session=session, step=lab.steps.get()),
        "api.ApiToken": ApiToken.issue(owner, "ci", "read")[0],
        "audit.AuditEntry": record("session.start", actor=owner, target=session, address="127.0.0.1"),
        "sessions_app.HousekeepingPass": HousekeepingPass.objects.create(
            kind="reap", started_at=timezone.now(), duration_seconds=0.2, sessions_handled=1),
        "sessions_app.RunnerCapacity": RunnerCapacity.objects.create(runner="fake", max_sessions=10),
        "watchdog.Alert": Alert.objects.create(
            kind="session_memory", subject=str(session.pk), session=session, level="warning", value=93,
            threshold=90, message="93% on session", first_seen=timezone.now(), last_seen=timezone.now()),
        "watchdog.SessionSample": SessionSample.objects.create(
            session=session, cpu_percent=3.0, memory_bytes=100 << 20, memory_limit_bytes=512 << 20,
            sampled_at=timezone.now()),
    }


# -- who gets in ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/admin/", "/admin/labs/lab/", "/admin/sessions_app/session/"])
def test_a_learner_is_sent_to_the_admin_login_page(owner_client, url):
    response = owner_client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# Sample values for URL converters: a learner must be turned away before any lookup happens,
# so the values need not name real objects.
SAMPLE_BY_CONVERTER = {"int": "0", "str": "x", "slug": "x", "path": "0", "uuid": str(uuid4())}
CONVERTER = re.compile(r"<(?:(?P<kind>\w+):)?\w+>")
ADMIN_LOGIN_EXEMPT = {"login/"}  # the login page itself is, of course, open


def concrete_paths(prefix: str, patterns: list[Any]) -> list[str]:
    """One request path per URL pattern below ``prefix``, converters filled with sample values.

    Regex patterns are spelled out here by hand, and an unknown one fails the test, so a new
    dashboard or admin view cannot slip past unchecked."""
    found: list[str] = []
    for pattern in patterns:
        route = str(pattern.pattern)
        if isinstance(pattern.pattern, RegexPattern):
            if pattern.name == "app_list":  # the admin's per-app index
                parts = [f"{label}/" for label in sorted({m._meta.app_label for m in admin.site._registry})]
            elif pattern.name is None and route == "(?P<url>.*)$":  # the admin's catch-all
                parts = ["no-such-page/"]
            elif (pattern.name or "").endswith("home_json"):  # django-rq's stats, open to bearer-token holders
                parts = ["stats.json/", "stats.json/notthetoken/"]
            elif (pattern.name or "").endswith("_metrics") or pattern.name == "metrics":
                parts = ["metrics/"]  # django-rq's Prometheus view (there with prometheus_client): staff or its token
            else:
                raise AssertionError(f"spell out sample paths for {prefix}{route} ({pattern.name})")
        else:
            parts = [CONVERTER.sub(lambda m: SAMPLE_BY_CONVERTER[m["kind"] or "str"], route)]
        for part in parts:
            if isinstance(pattern, URLResolver):
                found += concrete_paths(prefix + part, pattern.url_patterns)
            else:
                found.append(prefix + part)
    return sorted(set(found))


def mounted(module: str) -> URLResolver:
    [resolver] = [p for p in get_resolver().url_patterns
                  if isinstance(p, URLResolver) and getattr(p.urlconf_module, "__name__", None) == module]
    return resolver


ADMIN_PATHS = [p for p in concrete_paths("/admin/", admin.site.get_urls()) if p[len("/admin/"):] not in
               ADMIN_LOGIN_EXEMPT]
RQ_MOUNT = mounted("jobqueue.job_queue_pages")  # django-rq's pages, guarded (jobqueue/job_queue_pages.py)
RQ_PATHS = concrete_paths("/" + str(RQ_MOUNT.pattern), RQ_MOUNT.url_patterns)
# django-rq's JSON stats answer 401 rather than redirecting (they also take an API token).
TOKEN_PATHS = {p for p in ADMIN_PATHS + RQ_PATHS if "/stats.json/" in p or p.endswith("/metrics/")}


def test_the_learner_checks_cover_every_admin_and_dashboard_view():
    assert "/admin/labs/lab/0/change/" in ADMIN_PATHS
    assert "/admin/labs/" in ADMIN_PATHS
    assert "/admin/sessions_app/session/" in ADMIN_PATHS
    assert "/rq/" in RQ_PATHS
    assert "/rq/queues/0/empty/" in RQ_PATHS
    assert "/admin/django_rq/dashboard/" in ADMIN_PATHS  # django-rq's own admin entry
    assert len(ADMIN_PATHS) > 5 * len(ADMIN_MODELS)


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_learner_is_turned_away_from_every_admin_page(owner_client, method):
    login = reverse("admin:login")
    let_through = {}
    for path in ADMIN_PATHS:
        response = getattr(owner_client, method)(path)
        if path in TOKEN_PATHS:
            if response.status_code != 401:
                let_through[path] = (response.status_code, None)
            continue
        if response.status_code != 302 or not response["Location"].startswith(login):
            # logout sends a non-staff user to the index, which in turn sends them to the login page
            if path == reverse("admin:logout") and response.get("Location") == reverse("admin:index"):
                continue
            let_through[path] = (response.status_code, response.get("Location"))

    assert let_through == {}


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_learner_is_turned_away_from_every_rq_dashboard_page(owner_client, method):
    login = reverse("admin:login")
    let_through = {}
    for path in RQ_PATHS:
        response = getattr(owner_client, method)(path)
        if path in TOKEN_PATHS:
            ok = response.status_code == 401 and response.json()["error"] is True
        else:
            ok = response.status_code == 302 and response["Location"].startswith(login)
        if not ok:
            let_through[path] = response.status_code

    assert let_through == {}


def test_a_learner_cannot_delete_a_lab_or_empty_a_queue(owner_client, staff_user, lab, settings):
    admin_post = owner_client.post(admin_url(Lab, "changelist"),
                                   {"action": "delete_selected", "_selected_action": [lab.pk], "post": "yes"})
    delete = owner_client.post(admin_url(lab, "delete", lab.pk), {"post": "yes"})

    assert (admin_post.status_code, delete.status_code) == (302, 302)
    assert Lab.objects.filter(pk=lab.pk).exists()

    if not settings.REDIS_URL:
        pytest.fail("the RQ half needs Redis: set REDIS_URL (deploy/scripts/test.sh does)")
    # A job really waiting in Redis (enqueued without running it, whatever LAB_RQ_ASYNC says).
    configured = django_rq.get_queue("default")
    queue = rq.Queue("default", connection=configured.connection, is_async=True)
    job = queue.enqueue("os.getpid")
    try:
        index = next(i for i, q in enumerate(django_rq.settings.get_queues_list()) if q["name"] == "default")
        empty = reverse("django_rq:clear", args=[index])
        for path in (empty, reverse("django_rq:delete_job", args=[index, job.id]),
                     reverse("django_rq:actions", args=[index])):
            owner_client.post(path, {"action": "delete", "job_ids": [job.id]})

        assert job.id in queue.job_ids
        # The same request from staff does empty it, so the refusal above is not a no-op.
        owner_client.force_login(staff_user)
        owner_client.post(empty)
        assert job.id not in queue.job_ids
    finally:
        queue.remove(job.id)  # gone already when staff emptied the queue; this covers a failed assert
        queue.connection.delete(job.key)


def test_staff_do_reach_the_pages_learners_are_turned_away_from(client, staff_user, settings):
    client.force_login(staff_user)

    assert client.get(reverse("admin:index")).status_code == 200
    if settings.REDIS_URL:  # the dashboard reads Redis
        assert client.get(reverse("django_rq:home")).status_code == 200
        assert client.get(reverse("django_rq:home_json")).status_code == 200


def test_an_anonymous_visitor_is_sent_to_the_admin_login_page(client):
    response = client.get("/admin/accounts/userquota/")

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("model", [Lab, Image, Session, UserQuota, SiteAppearance], ids=lambda m: m.__name__)
def test_a_staff_member_without_permissions_gets_403_on_model_pages(client, django_user_model, password, model):
    helper = django_user_model.objects.create_user("hugo", "hugo@example.com", password, is_staff=True)
    client.force_login(helper)

    assert client.get(reverse("admin:index")).status_code == 200
    assert client.get(admin_url(model, "changelist")).status_code == 403


def test_a_staff_member_with_view_permission_sees_sessions_but_cannot_stop_them(
    client, django_user_model, password, owner, lab, teardowns
):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("vera", "vera@example.com", password, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="sessions_app"))
    client.force_login(viewer)
    session = make_session(owner, lab)

    listing = client.get(admin_url(Session, "changelist"))
    client.post(admin_url(Session, "changelist"), {"action": "stop_sessions", "_selected_action": [session.pk]})

    assert listing.status_code == 200
    assert "stop_sessions" not in listing.content.decode()
    session.refresh_from_db()
    assert session.state == State.RUNNING


# -- every model has working admin pages -------------------------------------------------------------


def test_every_project_model_is_registered_in_the_admin():
    missing = [
        model._meta.label
        for app_label in PROJECT_APPS
        for model in apps.get_app_config(app_label).get_models()
        if not admin.site.is_registered(model)
    ]

    assert missing == []


def test_the_user_admin_is_ours_with_the_quota_inline(django_user_model):
    from accounts.admin import UserAdmin, UserQuotaInline

    model_admin = admin.site._registry[django_user_model]

    assert isinstance(model_admin, UserAdmin)
    assert UserQuotaInline in model_admin.inlines


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m._meta.label)
def test_staff_can_open_the_list_change_and_add_pages_of(client, staff_user, one_of_each, model):
    client.force_login(staff_user)
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/admin/")
    request.user = staff_user

    listing = client.get(admin_url(model, "changelist"), follow=True)
    assert listing.status_code == 200

    obj = one_of_each.get(model._meta.label)
    assert obj is not None, f"add an object of {model._meta.label} to the one_of_each fixture"
    assert client.get(admin_url(model, "change", obj.pk)).status_code == 200

    if model_admin.has_add_permission(request):
        assert client.get(admin_url(model, "add")).status_code == 200


# -- labs and images --------------------------------------------------------------------------------


def test_the_image_list_shows_a_readable_size_and_the_checksum(admin_client, db):
    Image.objects.create(name="ubuntu", kind=Image.Kind.CONTAINER, reference="labs/ubuntu:24.04",
                         size_bytes=int(1.5 * GIB), sha256="ab" * 32)

    response = admin_client.get(admin_url(Image, "changelist"))

    assert "1.5\xa0GB" in response.content.decode()
    assert "abababababab" in response.content.decode()


def test_the_image_checksum_and_size_are_read_only(admin_client, container_image):
    response = admin_client.get(admin_url(Image, "change", container_image.pk))

    form = response.context["adminform"].form
    assert "sha256" not in form.fields
    assert "size_bytes" not in form.fields
    assert "sha256" in response.context["adminform"].readonly_fields


def test_staff_can_add_a_lab_with_its_steps_in_one_form(admin_client, container_image):
    data = {
        "title": "Grep basics", "slug": "grep-basics", "summary": "", "description": "",
        "difficulty": "beginner", "image": container_image.pk, "runner": "fake",
        "consoles": '["terminal"]', "exposed_ports": "[]", "network_mode": "bridge",
        "cpu": "1", "memory_mb": "512", "pids_limit": "256", "disk_mb": "2048",
        "ttl_minutes": "30", "max_extensions": "2", "extension_minutes": "15",
        "idle_timeout_minutes": "15", "auto_delete_minutes": "60", "judge": "[]",
        "idle_signals": ["terminal", "editor", "cpu"], "idle_cpu_percent": "20",
        "dind_images": '["python:3.12-slim"]', "assets": "[]", "finish_text": "Well done.",
        "unlock_steps_in_order": "on",
        "steps-TOTAL_FORMS": "2", "steps-INITIAL_FORMS": "0", "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "steps-0-order": "1", "steps-0-title": "Find", "steps-0-body": "Run `grep`.",
        "steps-0-verify": '[{"run": "true"}]', "steps-0-solution": "grep x f", "steps-0-hints": "[]",
        "steps-0-background_script": "printf 'x\\ny\\n' > f", "steps-0-foreground_script": "cd ~",
        "steps-1-order": "2", "steps-1-title": "Count", "steps-1-body": "Use `-c`.",
        "steps-1-verify": "[]", "steps-1-solution": "", "steps-1-hints": "[]",
    }

    response = admin_client.post(admin_url(Lab, "add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    lab = Lab.objects.get(slug="grep-basics")
    assert list(lab.steps.values_list("order", "title")) == [(1, "Find"), (2, "Count")]
    assert LabStep.objects.get(lab=lab, order=1).verify == [{"run": "true"}]
    assert LabStep.objects.get(lab=lab, order=1).background_script == "printf 'x\\ny\\n' > f"
    assert (lab.dind_images, lab.finish_text, lab.unlock_steps_in_order) == (["python:3.12-slim"], "Well done.", True)
    assert (lab.idle_signals, lab.idle_cpu_percent) == (["terminal", "editor", "cpu"], 20)


def change_form_data(response: Any) -> dict[str, Any]:
    """What the browser would post back unchanged from an admin change page: every field of the
    form and of its inline formsets, with their management forms."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data: dict[str, Any] = {}
    for form in forms:
        for bound in form:
            value = bound.value()
            if value is None or value is False:
                continue  # an unticked checkbox is simply absent from a real post
            data[bound.html_name] = "on" if value is True else value
    return data


def test_the_lab_form_offers_every_editable_lab_and_step_field(admin_client, lab):
    response = admin_client.get(admin_url(lab, "change", lab.pk))

    editable = {f.name for f in Lab._meta.get_fields() if getattr(f, "editable", False) and not f.auto_created}
    editable -= {"id", "created_at", "updated_at"}
    assert editable - set(response.context["adminform"].form.fields) == set()
    [steps] = response.context["inline_admin_formsets"]
    step_fields = {f.name for f in LabStep._meta.get_fields() if getattr(f, "editable", False)} - {"id", "lab"}
    assert step_fields - set(steps.formset.forms[0].fields) == set()


def test_staff_can_edit_preloaded_images_assets_finish_text_and_step_order(admin_client, lab):
    page = admin_client.get(admin_url(lab, "change", lab.pk))
    data = change_form_data(page)
    data.update({
        "dind_images": '["labs/tiny:test", "nginx:alpine"]',
        "assets": '[{"file": "assets/app.py", "target": "/home/learner/app.py", "chmod": "0644"}]',
        "finish_text": "## Done\n\nYou greeted the shell.",
    })
    data.pop("unlock_steps_in_order", None)  # untick: steps open in any order

    response = admin_client.post(admin_url(lab, "change", lab.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    lab.refresh_from_db()
    assert lab.dind_images == ["labs/tiny:test", "nginx:alpine"]
    assert lab.assets == [{"file": "assets/app.py", "target": "/home/learner/app.py", "chmod": "0644"}]
    assert lab.finish_text == "## Done\n\nYou greeted the shell."
    assert lab.unlock_steps_in_order is False


def test_the_lab_form_refuses_preloaded_images_that_are_not_a_list_of_references(admin_client, lab):
    data = change_form_data(admin_client.get(admin_url(lab, "change", lab.pk)))
    data["dind_images"] = '[""]'

    response = admin_client.post(admin_url(lab, "change", lab.pk), data)

    assert response.status_code == 200
    assert "dind_images" in response.context["adminform"].form.errors
    lab.refresh_from_db()
    assert lab.dind_images == []


def test_staff_can_edit_step_scripts_inline_on_the_lab_page(admin_client, lab):
    step = lab.steps.get()
    data = change_form_data(admin_client.get(admin_url(lab, "change", lab.pk)))
    data["steps-0-background_script"] = "mkdir -p /srv/app && touch /srv/app/ready"
    data["steps-0-foreground_script"] = "cd /srv/app"

    response = admin_client.post(admin_url(lab, "change", lab.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    step.refresh_from_db()
    assert step.background_script == "mkdir -p /srv/app && touch /srv/app/ready"
    assert step.foreground_script == "cd /srv/app"


def test_staff_can_edit_step_scripts_on_the_step_page(admin_client, lab):
    step = lab.steps.get()
    data = change_form_data(admin_client.get(admin_url(step, "change", step.pk)))
    data["background_script"] = "apt-get install -y tree"
    data["foreground_script"] = "clear"

    response = admin_client.post(admin_url(step, "change", step.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    step.refresh_from_db()
    assert (step.background_script, step.foreground_script) == ("apt-get install -y tree", "clear")


def test_the_source_format_is_shown_read_only(admin_client, lab):
    Lab.objects.filter(pk=lab.pk).update(source_format="killercoda")
    page = admin_client.get(admin_url(lab, "change", lab.pk))
    data = change_form_data(page)
    data["source_format"] = ""  # a crafted post cannot change it

    response = admin_client.post(admin_url(lab, "change", lab.pk), data)

    assert "source_format" in page.context["adminform"].readonly_fields
    assert "source_format" not in page.context["adminform"].form.fields
    assert "Killercoda scenario" in page.content.decode()
    assert response.status_code == 302, response.context["adminform"].form.errors
    lab.refresh_from_db()
    assert lab.source_format == "killercoda"


def test_the_lab_page_lists_its_steps_inline(admin_client, lab):
    response = admin_client.get(admin_url(lab, "change", lab.pk))

    [steps] = response.context["inline_admin_formsets"]
    assert steps.formset.model is LabStep
    assert "Type `echo hello`." in response.content.decode()


# -- sessions ----------------------------------------------------------------------------------------


def test_sessions_cannot_be_added_in_the_admin(admin_client, db):
    assert admin_client.get(admin_url(Session, "add")).status_code == 403
    assert admin_url(Session, "add") not in admin_client.get(admin_url(Session, "changelist")).content.decode()


def test_the_session_list_shows_lab_user_state_and_runner(admin_client, owner, lab):
    session = make_session(owner, lab)

    response = admin_client.get(admin_url(Session, "changelist"))

    page = response.content.decode()
    assert str(session.pk)[:8] in page
    assert "Hello shell" in page
    assert "olivia" in page
    assert "Running" in page


def test_the_session_list_filters_by_state(admin_client, owner, lab):
    running = make_session(owner, lab)
    stopped = make_session(owner, lab, state=State.STOPPED, end_reason=EndReason.LEARNER)

    response = admin_client.get(admin_url(Session, "changelist"), {"state__exact": "stopped"})

    assert list(response.context["cl"].queryset) == [stopped]
    assert running not in response.context["cl"].queryset


@pytest.mark.parametrize("term", ["olivia", "hello-shell", "prefix", "full-id"])
def test_the_session_list_is_searchable_by_user_lab_and_id(admin_client, owner, other_learner, lab, term):
    wanted = make_session(owner, lab)
    other_lab = Lab.objects.create(slug="other", title="Other", image=lab.image, runner="fake")
    make_session(other_learner, other_lab)
    query = {"prefix": str(wanted.pk)[:8], "full-id": str(wanted.pk)}.get(term, term)

    response = admin_client.get(admin_url(Session, "changelist"), {"q": query})

    assert list(response.context["cl"].queryset) == [wanted]


def test_the_session_page_shows_runner_details_and_the_event_log_read_only(admin_client, owner, lab):
    session = make_session(owner, lab, runner_state={"container": "abc123"}, endpoints={"terminal": "/t/1"})
    session.log("Container abc123 started.")

    response = admin_client.get(admin_url(Session, "change", session.pk))

    page = response.content.decode()
    assert "Container abc123 started." in page
    assert response.context["adminform"].form.fields == {}
    for name in ("state", "runner_state", "endpoints", "created_at", "expires_at", "ended_at"):
        assert name in response.context["adminform"].readonly_fields
    [events] = response.context["inline_admin_formsets"]
    assert not events.has_add_permission
    assert not events.has_change_permission
    assert not events.has_delete_permission


def test_stopping_selected_sessions_moves_running_ones_to_stopping(
    admin_client, owner, other_learner, lab, teardowns, django_capture_on_commit_callbacks
):
    first = make_session(owner, lab)
    second = make_session(other_learner, lab, state=State.PROVISIONING)
    done = make_session(owner, lab, state=State.STOPPED, end_reason=EndReason.LEARNER)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(
            admin_url(Session, "changelist"),
            {"action": "stop_sessions", "_selected_action": [first.pk, second.pk, done.pk]},
            follow=True,
        )

    assert response.status_code == 200
    for session in (first, second):
        session.refresh_from_db()
        assert session.state == State.STOPPING
        assert session.end_reason == EndReason.STAFF
        assert session.events.filter(message="Stopping (stopped by staff: admin).").exists()  # who asked
    done.refresh_from_db()
    assert done.state == State.STOPPED
    assert done.end_reason == EndReason.LEARNER
    queued = [callback for callback in callbacks if callback.__module__ != live.__name__]  # the rest tell open pages
    assert len(queued) == 2  # one teardown job queued per stopped session, after commit
    assert teardowns == []  # nothing tears down inside the request
    assert shown_messages(response) == ["Stopping 2 session(s).", "1 session(s) were already stopping or ended."]


def test_extending_selected_sessions_adds_the_lab_extension_minutes(admin_client, owner, lab):
    lab.extension_minutes = 20
    lab.max_extensions = 1
    lab.save()
    session = make_session(owner, lab, extensions_used=1)  # learners would have none left
    deadline = session.expires_at

    response = admin_client.post(
        admin_url(Session, "changelist"),
        {"action": "extend_sessions", "_selected_action": [session.pk]},
        follow=True,
    )

    session.refresh_from_db()
    assert session.expires_at == deadline + timedelta(minutes=20)
    assert session.extensions_used == 2
    assert session.events.filter(message="Extended by 20 minutes.").exists()
    assert shown_messages(response) == ["Extended 1 session(s)."]


def test_extending_reports_each_session_that_cannot_be_extended(admin_client, owner, lab):
    running = make_session(owner, lab)
    ended = make_session(owner, lab, state=State.EXPIRED, end_reason=EndReason.EXPIRED)
    deadline = ended.expires_at

    response = admin_client.post(
        admin_url(Session, "changelist"),
        {"action": "extend_sessions", "_selected_action": [running.pk, ended.pk]},
        follow=True,
    )

    ended.refresh_from_db()
    assert ended.expires_at == deadline
    running.refresh_from_db()
    assert running.extensions_used == 1
    messages = shown_messages(response)
    assert f"{ended}: Only a running session can be extended." in messages
    assert "Extended 1 session(s)." in messages


def test_a_live_session_cannot_be_deleted_but_an_ended_one_can(admin_client, owner, lab):
    live = make_session(owner, lab)
    ended = make_session(owner, lab, state=State.STOPPED, end_reason=EndReason.STAFF)

    refused = admin_client.post(admin_url(Session, "delete", live.pk), {"post": "yes"})
    allowed = admin_client.post(admin_url(Session, "delete", ended.pk), {"post": "yes"})

    assert refused.status_code == 403
    assert allowed.status_code == 302
    assert list(Session.objects.all()) == [live]


def test_bulk_delete_is_not_offered_for_sessions(admin_client, db):
    response = admin_client.get(admin_url(Session, "changelist"))

    choices = [value for value, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in choices
    assert {"stop_sessions", "extend_sessions"} <= set(choices)


def test_session_events_are_read_only(admin_client, owner, lab):
    event = make_session(owner, lab).log("Queued.")

    assert admin_client.get(admin_url(SessionEvent, "add")).status_code == 403
    response = admin_client.post(admin_url(SessionEvent, "change", event.pk), {"message": "rewritten"})
    event.refresh_from_db()
    assert response.status_code == 403
    assert event.message == "Queued."


# -- quotas -----------------------------------------------------------------------------------------


def test_the_quota_list_shows_limits_and_readable_sizes(admin_client, owner):
    UserQuota.objects.filter(pk=UserQuota.for_user(owner).pk).update(snapshot_stored_bytes=GIB // 2)

    response = admin_client.get(admin_url(UserQuota, "changelist"))

    page = response.content.decode()
    assert "olivia" in page
    assert "2.0\xa0GB" in page
    assert "512.0\xa0MB" in page


def test_the_stored_bytes_of_a_quota_are_read_only(admin_client, owner):
    quota = UserQuota.for_user(owner)

    response = admin_client.get(admin_url(quota, "change", quota.pk))

    assert "snapshot_stored_bytes" not in response.context["adminform"].form.fields
    assert "stored" in response.context["adminform"].readonly_fields


def test_the_quota_form_refuses_a_capacity_below_what_is_stored(admin_client, owner):
    quota = UserQuota.for_user(owner)
    UserQuota.objects.filter(pk=quota.pk).update(snapshot_stored_bytes=GIB)

    response = admin_client.post(
        admin_url(quota, "change", quota.pk),
        {"max_concurrent_sessions": "1", "snapshot_capacity_bytes": str(GIB // 2)},
    )

    assert response.status_code == 200
    assert "snapshot_capacity_bytes" in response.context["adminform"].form.errors
    quota.refresh_from_db()
    assert quota.snapshot_capacity_bytes == 2 * GIB


def test_staff_can_change_a_users_session_limit_from_the_user_page(admin_client, owner):
    quota = UserQuota.for_user(owner)
    data = {
        "username": owner.username, "email": owner.email, "first_name": "", "last_name": "",
        "is_active": "on", "date_joined_0": "2025-01-01", "date_joined_1": "10:00:00",
        "quota-TOTAL_FORMS": "1", "quota-INITIAL_FORMS": "1", "quota-MIN_NUM_FORMS": "0",
        "quota-MAX_NUM_FORMS": "1", "quota-0-id": str(quota.pk), "quota-0-user": str(owner.pk),
        "quota-0-max_concurrent_sessions": "3", "quota-0-snapshot_capacity_bytes": str(5 * GIB),
    }

    response = admin_client.post(admin_url(owner, "change", owner.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    quota.refresh_from_db()
    assert quota.max_concurrent_sessions == 3
    assert quota.snapshot_capacity_bytes == 5 * GIB


def test_the_user_add_page_leaves_the_quota_to_be_created_on_first_use(admin_client, db):
    response = admin_client.get(reverse("admin:auth_user_add"))

    assert response.status_code == 200
    assert list(response.context["inline_admin_formsets"]) == []
