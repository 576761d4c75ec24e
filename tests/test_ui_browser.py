"""The Prefect UI in a real browser (Playwright driving the system's Chromium, never a
downloaded one): the deployment's custom-run form shows the preset's defaults, and the finished
pipeline run (tests/deploy_fixtures.py) shows its summary artifact with the report's plots.

Screenshots of every page checked are written to runs/ui-screenshots/ (the failure message
names the one to look at)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

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
        pytest.skip("no Chromium here: `apt-get install chromium` (make install does it as root)")
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
    return api.rsplit("/api", 1)[0]


def test_custom_run_form_shows_the_defaults(pipeline_run, browser):
    api = pipeline_run["api"]
    (deployment,) = httpx.post(
        f"{api}/deployments/filter",
        json={"deployments": {"name": {"any_": ["pipeline-demo"]}}},
        timeout=30,
    ).json()
    page = browser.new_page()
    page.goto(f"{_ui(api)}/deployments/deployment/{deployment['id']}/run")
    with shot(page, "custom-run-form"):
        page.get_by_text("Actions (Optional)", exact=True).wait_for()
        text = page.inner_text("body")
        actions = text.split("Actions (Optional)", 1)[1].split("Viable Threshold", 1)[0]
        assert "calculator" in actions and "symbolic_math" in actions, actions
        policies = text.split("Policies (Optional)", 1)[1].split("Extra Adapters", 1)[0]
        assert all(p in policies for p in ("base", "sft", "spark")), policies
        # descriptions as written, and no "X | None" type switches
        assert "default <runs_dir>/<run_name>/artifacts" in text
        assert "Property is type" not in text and "| None" not in text
        values = page.evaluate(
            "Array.from(document.querySelectorAll('input, textarea')).map(e => e.value)"
        )
        assert {"bundled", "2", "demo", "smollm2-135m-instruct"} <= set(values), values
    with shot(page, "custom-run-form-invalid"):
        per_category = page.locator("input[type=number]").first  # data.per_category
        assert per_category.input_value() == "2"
        per_category.fill("-1")
        page.get_by_role("button", name="Submit").click()
        page.get_by_text(
            "Validation failed for field 'config.data.per_category'. "
            "Failure reason: -1 is less than or equal to the minimum of 0"
        ).first.wait_for()  # the UI's toast (it may render twice)
    page.close()


def test_pipeline_run_page_shows_the_summary_and_the_plots(pipeline_run, browser):
    api, flow_run_id = pipeline_run["api"], pipeline_run["flow_run_id"]
    page = browser.new_page()
    page.goto(f"{_ui(api)}/runs/flow-run/{flow_run_id}")
    with shot(page, "pipeline-run-artifacts-tab"):
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("SPaRK pipeline: stages and results").first.click()
        page.wait_for_url("**/artifacts/artifact/**")
    with shot(page, "pipeline-summary-artifact"):
        page.get_by_text("Evaluation (held-out questions, all categories)").wait_for()
        text = page.inner_text("body")
        for stage in ("ingest", "synthesize", "label", "train", "evaluate"):
            assert f"{stage} / " in text, stage  # the links to each stage's run
        page.wait_for_function(
            "Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
            ".every(i => i.complete)"
        )
        widths = page.evaluate(
            "Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
            ".map(i => [i.alt, i.naturalWidth])"
        )
        assert len(widths) == 3 and all(w > 0 for _, w in widths), widths
    page.close()
