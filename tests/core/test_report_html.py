"""The report page as HTML: markup from the state or extras is escaped, nothing outside the page is used."""

from __future__ import annotations

from report_run import EXTRAS, Run, _Page

from aoi_pipeline.core.report import render_report


def test_markup_from_the_state_never_becomes_markup(failed_run: Run) -> None:
    text = render_report(failed_run.state)
    assert "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; leakage" in text or (
        "&lt;script&gt;alert('x')&lt;/script&gt; &amp; leakage" in text
    )
    assert [tag for tag, _ in _Page(text).elements if tag == "script"] == []


def test_hostile_labels_in_extras_are_escaped_in_attributes_and_text(complete_run: Run) -> None:
    extras = {
        "training_rows_by_source": {"iter1": {'"><b>x</b>': 3}},
        "rca_gaps": {"iter1": [{"label": "<i>open</i>"}]},
    }
    text = render_report(complete_run.state, extras=extras)
    page = _Page(text)
    assert page.errors == []
    assert [tag for tag, _ in page.elements if tag in ("b", "i")] == []
    assert page.all("rect", **{"class": "bar-segment"})[0]["data-source"] == '"><b>x</b>'


def test_the_page_references_nothing_outside_itself(complete_run: Run, failed_run: Run) -> None:
    for state in (complete_run.state, failed_run.state):
        text = render_report(state, extras=EXTRAS)
        lowered = text.lower()
        for forbidden in ("http", "src=", "href=", "url(", "@import", "<link", "<script", "<img"):
            assert forbidden not in lowered, forbidden
