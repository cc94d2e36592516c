"""The book's whole execution time, under the status page's execution table.

myst-nb's ``{nb-exec-table}`` lists each page's run time; ``{exec-total}`` says what
they add up to: the seconds of every page executed for this build (a page served from
the execution cache counts with the time of the run that produced it).
"""

from __future__ import annotations

from docutils import nodes
from myst_nb.sphinx_ import NbMetadataCollector
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective


class ExecTotalNode(nodes.General, nodes.Element):
    """A placeholder, replaced by the sentence once every page is executed."""


class ExecTotal(SphinxDirective):
    def run(self):
        return [ExecTotalNode()]


def total_seconds(doc_data: dict) -> tuple[float, int]:
    """The summed run time of the executed pages, and how many there are."""
    runtimes = [
        data["exec_data"]["runtime"]
        for data in doc_data.values()
        if data.get("exec_data") and data["exec_data"].get("runtime") is not None
    ]
    return float(sum(runtimes)), len(runtimes)


class ExecTotalPostTransform(SphinxPostTransform):
    default_priority = 8  # with myst-nb's table, before references are resolved

    def run(self, **kwargs) -> None:
        seconds, pages = total_seconds(NbMetadataCollector.get_doc_data(self.env))
        for node in self.document.findall(ExecTotalNode):
            minutes, rest = divmod(round(seconds), 60)
            text = (
                f"All {pages} executed pages together: {seconds:.0f} s "
                f"({minutes} min {rest} s)."
            )
            node.replace_self(nodes.paragraph(text=text))


def setup(app: Sphinx) -> dict:
    app.add_node(ExecTotalNode)
    app.add_directive("exec-total", ExecTotal)
    app.add_post_transform(ExecTotalPostTransform)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
