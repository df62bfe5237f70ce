"""Runs the examples of a docs page as doctests, for the tests that keep the docs true."""

from __future__ import annotations

import doctest
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def run_doc_examples(page: str, *, section: str | None = None) -> int:
    """Run the ``>>>`` examples of ``docs/<page>`` (or of one marked section) as doctests.

    A section is the text between ``<!-- NAME: begin`` and ``<!-- NAME: end`` (or the end of
    the page). Fails the test with doctest's report if any example fails; returns how many
    examples ran, so the caller can check the page still has its examples.
    """
    text = (DOCS / page).read_text(encoding="utf-8")
    if section is not None:
        text = text.split(f"<!-- {section}: begin")[1].split(f"<!-- {section}: end")[0]
    test = doctest.DocTestParser().get_doctest(text, {}, f"docs/{page}", str(DOCS / page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    output: list[str] = []
    runner.run(test, out=output.append)
    assert runner.failures == 0, "".join(output)
    return len(test.examples)
