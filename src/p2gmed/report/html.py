"""Markdown -> HTML for the reports p2gmed writes, with python-markdown (installed with TensorBoard).

Extensions: tables (with alignment), fenced code. Safety: raw HTML in the Markdown is escaped, not passed through
(python-markdown's HTML block and inline-HTML processors are removed), and links or images whose address has a
scheme other than http, https or mailto (e.g. `javascript:`) lose it; text and attributes are escaped by the
serializer, so any input gives safe HTML.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

#: address schemes a link or image may use; relative addresses (figures/a.png) have none
SAFE_SCHEMES = ("", "http", "https", "mailto")

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
code { background: #f5f5f5; padding: 0 0.2em; }
pre { background: #f5f5f5; padding: 0.6em; overflow-x: auto; }
blockquote { border-left: 4px solid #d9822b; margin: 1em 0; padding: 0.3em 1em; background: #fff6ec; }
img { max-width: 100%; }
"""


def safe_url(url: str) -> bool:
    """Whether an href/src is relative or uses a scheme of `SAFE_SCHEMES` (whitespace and case tricks included)."""
    cleaned = "".join(ch for ch in url if ch.isprintable() and not ch.isspace())
    return urlsplit(cleaned).scheme.lower() in SAFE_SCHEMES


class _DropUnsafeUrls(Treeprocessor):
    def run(self, root):
        for element in root.iter():
            for attribute in ("href", "src"):
                value = element.get(attribute)
                if value is not None and not safe_url(value):
                    del element.attrib[attribute]
        return root


class _SafeExtension(Extension):
    """No raw HTML; no links or images with unsafe schemes."""

    def extendMarkdown(self, md):  # noqa: N802 - python-markdown's API name
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_DropUnsafeUrls(md), "drop_unsafe_urls", 0)


def markdown_to_html(text: str) -> str:
    """The HTML body of a Markdown document (tables, fenced code, no raw HTML, safe links)."""
    return markdown.markdown(text, extensions=["tables", "fenced_code", _SafeExtension()], output_format="html")


def html_document(text: str, title: str = "p2gmed report") -> str:
    """A complete, self-contained HTML page (inline CSS, no external resources) for a Markdown document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{markdown_to_html(text)}\n</body>\n</html>\n"
    )
