"""The Prefect UI that `spark server` serves (Prefect's V2, under /v2/) in a real browser
(Playwright driving the system's Chromium, never a downloaded one): the deployment's
custom-run form shows the preset's defaults under sections titled by words, descriptions as
written, and refuses bad input with a message (a field's rule, and an unknown category typed
into a field's JSON input); the finished pipeline run (tests/deploy_fixtures.py) shows its
progress card with a number, its summary artifact with answered accuracy, the report's plots
and a working link to this run's own report — and a second run of the same name links its own.

Screenshots of every page checked are written to runs/ui-screenshots/ (the failure message
names the one to look at)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e  # chromium on the real server's pipeline run
SHOTS = Path(__file__).resolve().parents[1] / "runs" / "ui-screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (make test does it as root)")
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@contextmanager
def shot(page, name: str) -> Iterator[None]:
    """Screenshot the page after the checks, or at the moment they fail."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    try:
        yield
    except BaseException as exc:
        page.screenshot(path=str(path), full_page=True)
        raise AssertionError(f"{exc} (screenshot: {path})") from exc
    page.screenshot(path=str(path), full_page=True)


def _ui(api: str) -> str:
    return api.rsplit("/api", 1)[0] + "/v2"


def _deployment(api: str, name: str) -> dict:
    (deployment,) = httpx.post(
        f"{api}/deployments/filter",
        json={"deployments": {"name": {"any_": [name]}}},
        timeout=30,
    ).json()
    return deployment


def _field(page, label: str):
    """The input of the form field labelled ``label`` ("Per Category (Optional)")."""
    element = page.locator("label", has_text=re.compile(f"^{re.escape(label)}$")).first
    element.wait_for()
    return element, page.locator("#" + element.get_attribute("for").replace(":", "\\:"))


def test_custom_run_form_shows_the_defaults_in_words(pipeline_run, browser):
    api = pipeline_run["api"]
    deployment = _deployment(api, "pipeline-demo")
    page = browser.new_page()
    page.goto(f"{_ui(api)}/deployments/deployment/{deployment['id']}/run")
    with shot(page, "custom-run-form"):
        page.get_by_text("Actions (Optional)", exact=True).wait_for()
        text = page.inner_text("body")
        for title in ("Data", "Rollout", "Generator", "Judge", "Training", "Runtime"):
            assert f"\n{title} (Optional)\n" in text, title  # sections titled by words
        assert "Config (Optional)" not in text  # not by class names ("DataConfig")
        actions = text.split("Actions (Optional)", 1)[1].split("Viable Threshold", 1)[0]
        assert "calculator" in actions and "symbolic_math" in actions, actions
        policies = text.split("Policies (Optional)", 1)[1].split("Extra Adapters", 1)[0]
        assert all(p in policies for p in ("base", "sft", "ppo")), policies
        # descriptions as written (V2 shows text: no HTML entities), no "X | None" switches
        assert "default <runs_dir>/<run_name>/artifacts" in text
        assert "&lt;" not in text and "-&gt;" not in text
        assert "name -> PEFT adapter folder" in text
        assert "Property is type" not in text and "| None" not in text
        values = page.evaluate(
            "Array.from(document.querySelectorAll('input, textarea')).map(e => e.value)"
        )
        assert {"bundled", "2", "demo", "smollm2-135m-instruct"} <= set(values), values
    with shot(page, "custom-run-form-invalid"):
        label, per_category = _field(page, "Per Category (Optional)")
        assert per_category.input_value() == "2"
        per_category.fill("-1")
        page.get_by_role("button", name="Submit").click()
        # V2 validates the form on the server and shows the rule under the field
        page.get_by_text("-1 is less than or equal to the minimum of 0").first.wait_for()
        label.scroll_into_view_if_needed()
    page.close()


def test_an_unknown_category_in_the_json_input_is_refused_with_a_message(pipeline_run, browser):
    api = pipeline_run["api"]
    deployment = _deployment(api, "pipeline-demo")
    page = browser.new_page()
    page.goto(f"{_ui(api)}/deployments/deployment/{deployment['id']}/run")
    with shot(page, "custom-run-form-unknown-category"):
        label, _ = _field(page, "Categories (Optional)")
        group = label.locator("xpath=ancestor::div[contains(@class, 'group')][1]")
        group.get_by_role("button", name="Open menu").click()
        page.get_by_role("menuitem", name="Use JSON Input").click()
        _, editor = _field(page, "Categories (Optional)")
        editor.locator(".cm-content").fill('["maths"]')
        page.get_by_role("button", name="Submit").click()
        page.get_by_text(
            "Validation failed for field 'config.data.categories[0]'. "
            "Failure reason: 'maths' is not one of"
        ).first.wait_for()  # the UI's toast, with the server's message
    page.close()


def _summary(page, api: str, flow_run_id: str, name: str, retried: bool = False) -> str:
    """Open a pipeline run's page, check its progress card, open its summary artifact; the
    summary's text."""
    page.goto(f"{_ui(api)}/runs/flow-run/{flow_run_id}")
    with shot(page, f"{name}-progress-card"):
        page.get_by_role("tab", name="Artifacts").click()
        # the progress card: its description in words and a number
        page.get_by_text("100% — pipeline: stage 5/5, evaluate done").first.wait_for()
        if retried:  # the killed attempt's card says it was one
            page.get_by_text(re.compile(r"^earlier attempt, stopped at \d+% — ")).first.wait_for()
    with shot(page, f"{name}-opened"):
        page.get_by_text("SPaRK pipeline: stages and results").first.click()
        page.wait_for_url("**/v2/artifacts/artifact/**")
    with shot(page, name):
        page.get_by_text("Evaluation (held-out questions, all categories)").wait_for()
        return page.inner_text("body")


def test_pipeline_run_page_shows_the_summary_the_plots_and_its_report(pipeline_run, browser):
    api, flow_run_id = pipeline_run["api"], pipeline_run["flow_run_id"]
    page = browser.new_page()
    text = _summary(page, api, flow_run_id, "pipeline-summary-artifact", retried=True)
    with shot(page, "pipeline-summary-artifact"):
        for stage in ("ingest", "synthesize", "label", "train", "evaluate"):
            assert f"{stage} / " in text, stage  # the links to each stage's run
        assert "answered accuracy" in text and "no answer" in text
        page.wait_for_function(
            "Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
            ".every(i => i.complete)"
        )
        widths = page.evaluate(
            "Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
            ".map(i => [i.alt, i.naturalWidth])"
        )
        assert len(widths) == 3 and all(w > 0 for _, w in widths), widths
        stage_link = page.locator("a", has_text="train / ").first.get_attribute("href")
        assert "/v2/runs/flow-run/" in stage_link, stage_link
        first_report = page.get_by_role("link", name="Full report").get_attribute("href")
        assert "/v2/artifacts/artifact/" in first_report, first_report
    page.goto(first_report)
    with shot(page, "pipeline-report-artifact"):
        page.get_by_text("Paired accuracy differences").first.wait_for()
        assert "| extra |" not in page.inner_text("body")  # rendered as a table, not text
    # a second run of the same name links its own report, not the first one's
    text = _summary(page, api, pipeline_run["second_flow_run_id"], "second-run-summary")
    with shot(page, "second-run-summary"):
        second_report = page.get_by_role("link", name="Full report").get_attribute("href")
        assert second_report != first_report, (first_report, second_report)
    page.goto(second_report)
    with shot(page, "second-run-report-artifact"):
        page.get_by_text("Paired accuracy differences").first.wait_for()
    page.close()
