"""Metric charts (uPlot) and the compare tab in a real JupyterLab driven by headless Chromium.

A job's chart shows the values at the cursor in its legend, zooms on a drag and resets on a
double-click, and switches its y axis to a log scale (refused for a metric with values <= 0).
The compare tab marks the best final value of each metric and sorts by any column; the
charts redraw in the colours of a new theme and follow the width of their container.
"""

from __future__ import annotations

import re
import time

import pytest
from test_panel_browser import _open_panel, lab, page  # noqa: F401

pytestmark = pytest.mark.browser
# `margin` goes below 0, so its chart must refuse a log scale.
TRAINING = (
    "import jupyter_trainorch, time\nfor i in range(1, 21):\n"
    "    jupyter_trainorch.progress(i, 20, loss=lr / i, margin=i - 10)\n    time.sleep(0.05)\n"
)


def _canvas(chart) -> str:
    return chart.locator("canvas").evaluate("canvas => canvas.toDataURL()")


def _wait_canvas(page, chart: str, before: str, same: bool = False) -> None:  # noqa: F811
    """Until the chart's canvas (found again each time: a redraw may replace it) differs
    from ``before``, or with ``same``, until it equals it."""
    page.wait_for_function(
        "([chart, before, same]) => (document.querySelector(chart + ' canvas').toDataURL() === before) === same",
        arg=[chart, before, same], timeout=10_000,
    )  # fmt: skip


def _submit_and_finish(lab, runs: dict[str, float]) -> dict[str, str]:  # noqa: F811
    ids = {
        name: lab.api("jobs", "POST", {"template": "python-cell", "source": TRAINING,
                                       "params": {"lr": lr}, "name": name})["id"]
        for name, lr in runs.items()
    }  # fmt: skip
    deadline = time.monotonic() + 90
    while {lab.api(f"jobs/{i}")["state"] for i in ids.values()} != {"succeeded"}:
        assert time.monotonic() < deadline, "the training jobs did not finish"
        time.sleep(0.5)
    return ids


def test_chart_hover_zoom_and_log_scale_and_the_compare_table(lab, page):  # noqa: F811
    ids = _submit_and_finish(lab, {"curve-a": 0.1, "curve-b": 0.5})
    page.goto(f"{lab.url}/lab?token={lab.token}")
    _open_panel(page)
    panel = page.locator("#trainorch-panel")
    for job_id in ids.values():
        panel.locator(f"[data-job-id='{job_id}']").wait_for(timeout=60_000)

    panel.locator(f"[data-job-id='{ids['curve-a']}'] [data-action='open']").click()
    loss_chart = ".trainorch-detail .trainorch-chart[data-metric='loss']"
    chart = page.locator(loss_chart)
    chart.locator(".u-legend [data-attempt='1'][data-points='20']").wait_for(timeout=60_000)
    plot = chart.locator(".u-over")
    box = plot.bounding_box()
    # The full width of its container (no longer 270x70 px), 200 px high with its axes.
    assert chart.locator(".uplot").bounding_box()["width"] == pytest.approx(
        chart.bounding_box()["width"], abs=2
    )
    assert chart.locator("canvas").bounding_box()["height"] == pytest.approx(200, abs=2)

    # At rest the legend shows the latest loss; hovering, the step and the loss there.
    step = chart.locator(".u-legend .u-series").first.locator(".u-value")
    loss = chart.locator(".u-legend [data-attempt='1'] .u-value")
    assert (step.inner_text(), loss.inner_text()) == ("latest", "0.005")
    hovered = []
    for share in (0.25, 0.75):
        plot.hover(position={"x": box["width"] * share, "y": box["height"] / 2})
        assert re.fullmatch(r"\d+", step.inner_text()), step.inner_text()
        hovered.append(int(step.inner_text()))
        assert float(loss.inner_text()) == pytest.approx(0.1 / hovered[-1], rel=1e-3)
    assert hovered[0] < hovered[1] < 20, hovered

    # Drag to zoom on the steps, double-click to see them all again.
    page.mouse.move(0, 0)
    whole = _canvas(chart)
    plot.hover(position={"x": box["width"] * 0.2, "y": box["height"] / 2})
    page.mouse.down()
    plot.hover(position={"x": box["width"] * 0.6, "y": box["height"] / 2})
    page.mouse.up()
    _wait_canvas(page, loss_chart, whole)
    plot.dblclick(position={"x": box["width"] / 2, "y": box["height"] / 2})
    _wait_canvas(page, loss_chart, whole, same=True)

    # The log toggle redraws the loss on a log scale; a metric below 0 cannot have one.
    assert chart.get_attribute("data-scale") == "linear"
    chart.locator("input[data-action='log-scale']").check()
    page.wait_for_function("chart => document.querySelector(chart).dataset.scale === 'log'",
                           arg=loss_chart, timeout=5_000)  # fmt: skip
    chart.locator(".u-legend [data-attempt='1'][data-points='20']").wait_for(timeout=10_000)
    _wait_canvas(page, loss_chart, whole)
    margin = page.locator(".trainorch-detail .trainorch-chart[data-metric='margin']")
    assert margin.locator("input[data-action='log-scale']").is_disabled()

    # Compare: the lowest loss (curve-a's lr 0.1 / 20) is marked, and columns sort.
    for job_id in ids.values():
        panel.locator(f"[data-job-id='{job_id}'] input[data-action='select']").check()
    panel.locator("[data-action='compare']").click()
    table = page.locator(".trainorch-compare .trainorch-compare-table")
    table.wait_for(timeout=30_000)
    loss_head = table.locator("th[data-column='metric:loss']")
    loss_head.wait_for(timeout=30_000)
    assert "min best" in loss_head.inner_text()
    assert "max best" in table.locator("th[data-column='metric:margin']").inner_text()
    best = table.locator("td[data-column='metric:loss'][data-best='true']")
    assert best.count() == 1
    assert best.locator("xpath=..").get_attribute("data-job-id") == ids["curve-a"]
    assert best.inner_text().strip() == "★ 0.005"

    def order() -> list[str]:
        rows = table.locator("tbody tr")
        return [rows.nth(i).get_attribute("data-job-id") for i in range(rows.count())]

    sort_lr = table.locator("th[data-column='param:lr'] [data-action='sort']")
    sort_lr.click()
    assert order() == [ids["curve-a"], ids["curve-b"]]
    assert table.locator("th[data-column='param:lr']").get_attribute("aria-sort") == "ascending"
    sort_lr.click()
    assert order() == [ids["curve-b"], ids["curve-a"]]
    assert table.locator("th[data-column='param:lr']").get_attribute("aria-sort") == "descending"

    compare_loss = ".trainorch-compare .trainorch-chart[data-metric='loss']"
    compare_chart = page.locator(compare_loss)
    for job_id in ids.values():
        compare_chart.locator(f".u-legend [data-job-id='{job_id}'][data-points='20']").wait_for(
            timeout=30_000
        )

    # A new theme redraws the chart in its colours.
    before = _canvas(compare_chart)
    page.locator("#jp-MainMenu").get_by_text("Settings", exact=True).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^JupyterLab Dark$")).click()
    page.wait_for_function("() => document.body.dataset.jpThemeName === 'JupyterLab Dark'")
    _wait_canvas(page, compare_loss, before)

    # A narrower window narrows the charts with their container.
    wide = compare_chart.locator(".uplot").bounding_box()["width"]
    page.set_viewport_size({"width": 1000, "height": 900})
    page.wait_for_function(
        "([chart, wide]) => { const c = document.querySelector(chart); const w = c.querySelector('.uplot').offsetWidth;"
        " return Math.abs(w - c.offsetWidth) <= 2 && w < wide - 300; }",
        arg=[compare_loss, wide], timeout=10_000,
    )  # fmt: skip
