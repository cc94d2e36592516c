"""Drop duplicate <script> entries from every page.

sphinx-thebe (part of Jupyter Book 1) registers its inline configuration script once per
``env-before-read-docs`` event, which fires more than once in a Jupyter Book build; the
page then declares ``const THEBE_JS_URL`` twice and the browser reports a JavaScript
error. Identical script entries (same file or inline body) are removed here, keeping the
first.
"""

from __future__ import annotations


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # same file (or none: an inline script) and attributes; the two copies differ
        # only in whether "no file" is None or "", and possibly in priority
        attributes = getattr(script, "attributes", {})
        key = (
            str(getattr(script, "filename", script) or ""),
            tuple(sorted(attributes.items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
