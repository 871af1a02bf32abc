"""The dashboard end to end in headless Chromium: upload, submit, watch, download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, Service, TeacherFiles

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "dashboard"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (CI installs it and runs this test)",
)


def test_dashboard_upload_submit_watch_download(
    embedded_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        # The pages run under a Content-Security-Policy: nothing they do may be blocked by it.
        refused: list[str] = []
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(f"{embedded_service.base_url}/")
        expect(page.locator("h1")).to_have_text("Jobs")

        page.goto(f"{embedded_service.base_url}/dashboard/new")
        page.set_input_files("#teacher-file", str(digits_teacher.onnx))
        page.set_input_files("#train-file", str(digits_files["train"]))
        page.fill("#hidden", "32")
        page.fill("#epochs", "8")
        page.select_option("#transfer", "mixup")
        page.fill("#transfer-size", "5000")
        page.screenshot(path=str(SHOTS / "new-job.png"))
        page.click("#submit")
        page.wait_for_url("**/dashboard/job?id=job_*", timeout=60_000)
        job_id = page.url.split("id=")[1]

        expect(page.locator("#status .status")).to_have_text("succeeded", timeout=180_000)
        expect(page.locator("td.student-accuracy")).to_contain_text("%", timeout=10_000)
        # 8 epochs of the distilled student and 8 of the scratch student, in both charts.
        for chart in ("accuracy-chart", "loss-chart"):
            page.wait_for_function(
                f"Number(document.getElementById('{chart}').dataset.points || 0) == 16"
            )
        # The form's transfer set reached the job: 5,000 mixup rows labeled by the teacher.
        job = httpx.get(f"{embedded_service.base_url}/v1/jobs/{job_id}", timeout=30).json()
        assert job["metrics"]["transfer"]["sources"] == {"mixup": 5000}
        downloads = page.locator("#downloads a.download")
        expect(downloads).to_have_count(6)
        names = " ".join(downloads.all_inner_texts())
        assert all(n in names for n in ("student.onnx", "student.int8.onnx", "scratch.onnx"))
        # Which to ship: distilled or scratch, int8 or fp32.
        expect(page.locator("#verdict li").first).to_contain_text("Ship ")
        expect(page.locator("#verdict")).to_contain_text("int8 or fp32: ship")
        events = page.locator("#events tbody tr")
        assert events.count() > 5
        page.screenshot(path=str(SHOTS / "job.png"), full_page=True)

        page.goto(f"{embedded_service.base_url}/dashboard/")
        row = page.locator("#jobs tbody tr", has_text=job_id)
        expect(row.locator(".status")).to_have_text("succeeded")
        page.screenshot(path=str(SHOTS / "jobs.png"))

        with page.expect_download() as download:
            page.goto(f"{embedded_service.base_url}/dashboard/job?id={job_id}")
            page.locator("#downloads a.download", has_text="student.onnx").click()
        assert download.value.suggested_filename == "student.onnx"

        # A key typed into the header is sent as a bearer token (here: refused, as invalid).
        page.goto(f"{embedded_service.base_url}/dashboard/")
        page.fill("#api-key", "dk_not-a-key")
        page.dispatch_event("#api-key", "change")
        page.reload()
        expect(page.locator("#error")).to_have_text("the API key is not valid")
        page.fill("#api-key", "")
        page.dispatch_event("#api-key", "change")
        page.reload()
        expect(page.locator("#jobs tbody tr", has_text=job_id)).to_have_count(1)
        browser.close()
    assert refused == [], refused


def test_dashboard_shows_a_searchs_leaderboard(
    embedded_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    service = embedded_service
    teacher = service.upload_teacher(digits_teacher.onnx).json()["id"]
    train = service.upload_dataset(digits_files["train"]).json()["id"]
    body = {
        "teacher_id": teacher,
        "train_dataset_id": train,
        "student": {"hidden_sizes": [16]},
        "training": {"epochs": 2},
        "search": {"budget": 2},
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{service.base_url}/dashboard/job?id={job['id']}")
        expect(page.locator("#search-card")).to_be_visible(timeout=20_000)
        rows = page.locator("#search tbody tr")
        expect(rows).to_have_count(4)  # two students, two scratch
        expect(rows.filter(has_text="(chosen)")).to_have_count(2)
        page.wait_for_function(
            "Number(document.getElementById('search-chart').dataset.points || 0) == 4"
        )
        page.screenshot(path=str(SHOTS / "search.png"), full_page=True)
        browser.close()
