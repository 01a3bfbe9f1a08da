"""StackOverflow answers as code documents (a Posts.xml dump or a parquet export of it).

    for post_id, code in iter_answers("Posts.xml", tags={"python"}):
        ...

An answer (PostTypeId 2) becomes a document when its Body carries code blocks
(`<pre><code>...</code></pre>`); the document is those blocks, HTML-unescaped, joined by
a blank line. Inline `<code>` spans are prose, not code, and are left out. With `tags`,
only answers whose question carries one of them are kept; that needs the question ids
first, so the file is read twice (both passes stream, memory holds only ids).
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from phi1.errors import Phi1Error

_PRE_CODE = re.compile(r"<pre\b[^>]*>\s*<code\b[^>]*>(.*?)</code>\s*</pre>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")
_TAGS_FIELD = re.compile(r"<([^<>]+)>|\|([^|]+)")


def code_blocks(body: str) -> str:
    """The answer's code blocks, unescaped, joined by a blank line ("" when it has none)."""
    blocks = []
    for m in _PRE_CODE.finditer(body or ""):
        # highlighters sometimes leave markup inside a block; the text is what matters
        block = html.unescape(_TAG.sub("", m.group(1))).strip("\n")
        if block.strip():
            blocks.append(block)
    return "\n\n".join(blocks)


def parse_tags(field: str | None) -> set[str]:
    """`<python><list>` (old dumps) or `|python|list|` (2024+ dumps) -> {"python", "list"}."""
    if not field:
        return set()
    return {(a or b).strip().lower() for a, b in _TAGS_FIELD.findall(field) if (a or b).strip()}


def _xml_rows(path: Path, fh: Optional[BinaryIO] = None) -> Iterator[dict[str, str]]:
    try:
        for _, elem in ET.iterparse(fh if fh is not None else path, events=("end",)):
            if elem.tag == "row":
                yield dict(elem.attrib)
                elem.clear()
    except ET.ParseError as exc:
        raise Phi1Error(f"{path}: not a valid Posts.xml ({exc})") from None


def _parquet_rows(path: Path, fh: Optional[BinaryIO] = None) -> Iterator[dict[str, object]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh if fh is not None else path)
    except Exception as exc:  # ArrowInvalid and friends: name the file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Phi1Error(f"{path}: not a readable parquet file ({msg})") from None
    by_lower = {n.lower(): n for n in pf.schema_arrow.names}
    missing = [c for c in ("id", "posttypeid", "body") if c not in by_lower]
    if missing:
        raise Phi1Error(f"{path}: StackOverflow export lacks column(s) {', '.join(missing)}")
    canon = {"id": "Id", "posttypeid": "PostTypeId", "parentid": "ParentId", "body": "Body", "tags": "Tags"}
    cols = {by_lower[c]: name for c, name in canon.items() if c in by_lower}  # actual -> Posts.xml name
    for batch in pf.iter_batches(columns=list(cols), batch_size=2000):
        for row in batch.to_pylist():
            # ids may be integers in an export; Posts.xml attributes are strings
            yield {cols[k]: ("" if v is None else str(v)) for k, v in row.items()}


def iter_rows(path: str | Path, fh: Optional[BinaryIO] = None) -> Iterator[dict]:
    """Rows of a dump file as dicts with Posts.xml attribute names. With `fh` (an open,
    seekable binary file) the rows come from it and `path` only names it."""
    p = Path(path)
    if fh is not None:
        fh.seek(0)
    return _parquet_rows(p, fh) if p.suffix == ".parquet" else _xml_rows(p, fh)


def iter_answers(
    path: str | Path, tags: Iterable[str] = (), fh: Optional[BinaryIO] = None
) -> Iterator[tuple[str, str]]:
    """(answer id, code) for every answer with code blocks, in file order (read from
    `fh` when given, see iter_rows)."""
    wanted = {t.lower() for t in tags}
    allowed: set[str] | None = None
    if wanted:
        allowed = {
            r.get("Id", "") for r in iter_rows(path, fh)
            if r.get("PostTypeId") == "1" and parse_tags(r.get("Tags")) & wanted
        }
    for r in iter_rows(path, fh):
        if r.get("PostTypeId") != "2":
            continue
        if allowed is not None and r.get("ParentId") not in allowed:
            continue
        code = code_blocks(r.get("Body", ""))
        if code:
            yield r.get("Id", ""), code
