"""The book's public repository is one setting: ``repository.url`` in ``_config.yml``.

Jupyter Book 1 falls back to its own repository when the URL is unset, and shows
repository, issue and launch (Binder, Colab) buttons that lead nowhere. Here an empty
URL turns all of those off (the download buttons stay), and a URL turns them on, so the
buttons work the day the book has a public home and never point at a repository that
does not exist.
"""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.config import Config

JUPYTER_BOOK_DEFAULT = "https://github.com/executablebooks/jupyter-book"
BUTTONS = ("use_repository_button", "use_issues_button")


def _configure(app: Sphinx, config: Config) -> None:
    options = config.html_theme_options
    url = (options.get("repository_url") or "").strip()
    if url and url != JUPYTER_BOOK_DEFAULT:
        options.update(dict.fromkeys(BUTTONS, True))
        return
    options.pop("repository_url", None)
    options.update(
        dict.fromkeys((*BUTTONS, "use_edit_page_button", "use_source_button"), False)
    )
    launch = dict(options.get("launch_buttons") or {})
    for key in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url"):
        launch.pop(key, None)
    launch["thebe"] = False
    options["launch_buttons"] = launch


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _configure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
