"""A tiny Markdown -> HTML converter for the reports p2gmed writes (no python-markdown dependency).

It covers exactly the subset `report.demo` and `report.reproduce` emit:

- ATX headings (`# ...` to `###### ...`), paragraphs, horizontal rules (`---`)
- pipe tables with a `|---|` separator row (alignment colons accepted and honoured)
- images `![alt](src)`, links `[text](href)`, inline code, `**bold**`, `*italic*`
- fenced code blocks (three backticks), unordered (`-`, `*`) and ordered (`1.`) lists, blockquotes (`> ...`)

Everything else is shown as escaped text, so any input gives valid, safe HTML (no raw HTML pass-through).
"""

from __future__ import annotations

import html
import re

_INLINE_CODE = re.compile(r"`([^`]+)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_ORDERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_UNORDERED = re.compile(r"^\s*[-*+]\s+(.*)$")

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


def inline(text: str) -> str:
    """Convert the inline syntax of one line of Markdown to HTML (input is escaped first)."""
    # Inline code is cut out before anything else so that its content is never formatted.
    codes: list[str] = []

    def keep_code(match: re.Match) -> str:
        codes.append(f"<code>{html.escape(match.group(1), quote=False)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE.sub(keep_code, text)
    text = html.escape(text, quote=False)
    text = _IMAGE.sub(lambda m: f'<img src="{html.escape(m.group(2))}" alt="{m.group(1)}">', text)
    text = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _alignments(separator: str) -> list[str]:
    out = []
    for cell in _cells(separator):
        left, right = cell.startswith(":"), cell.endswith(":")
        out.append("center" if left and right else "right" if right else "left" if left else "")
    return out


def _table(lines: list[str]) -> str:
    header, aligns, body = _cells(lines[0]), _alignments(lines[1]), [_cells(r) for r in lines[2:]]

    def cell(tag: str, text: str, i: int) -> str:
        style = f' style="text-align:{aligns[i]}"' if i < len(aligns) and aligns[i] else ""
        return f"<{tag}{style}>{inline(text)}</{tag}>"

    head = "".join(cell("th", c, i) for i, c in enumerate(header))
    rows = [
        "<tr>" + "".join(cell("td", r[i] if i < len(r) else "", i) for i in range(len(header))) + "</tr>"
        for r in body
    ]
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def markdown_to_html(markdown: str) -> str:
    """Convert a Markdown document (the subset described in the module docstring) to an HTML fragment."""
    lines = markdown.splitlines()
    out: list[str] = []
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            out.append("<p>" + "<br>\n".join(inline(p) for p in paragraph) + "</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append("<pre><code>" + html.escape("\n".join(block), quote=False) + "</code></pre>")
            i += 1
            continue
        if not stripped:
            flush()
            i += 1
            continue
        heading = _HEADING.match(stripped)
        if heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if re.fullmatch(r"(-{3,}|\*{3,}|_{3,})", stripped):
            flush()
            out.append("<hr>")
            i += 1
            continue
        if "|" in stripped and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            flush()
            block = [line, lines[i + 1]]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                block.append(lines[i])
                i += 1
            out.append(_table(block))
            continue
        if stripped.startswith(">"):
            flush()
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip()[1:].lstrip())
                i += 1
            out.append("<blockquote>" + markdown_to_html("\n".join(quote)) + "</blockquote>")
            continue
        for pattern, tag in ((_UNORDERED, "ul"), (_ORDERED, "ol")):
            if pattern.match(line) and not _TABLE_SEP.match(line):
                flush()
                items = []
                while i < len(lines) and pattern.match(lines[i]):
                    items.append(f"<li>{inline(pattern.match(lines[i]).group(1))}</li>")
                    i += 1
                out.append(f"<{tag}>\n" + "\n".join(items) + f"\n</{tag}>")
                break
        else:
            paragraph.append(stripped)
            i += 1
    flush()
    return "\n".join(out)


def html_document(markdown: str, title: str = "p2gmed report") -> str:
    """A complete, self-contained HTML page (inline CSS, no external resources) for a Markdown document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"{markdown_to_html(markdown)}\n</body>\n</html>\n"
    )
