"""StackOverflow answers: code blocks, HTML entities, tags, both export formats."""

from __future__ import annotations

import html

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phi1.errors import Phi1Error
from phi1.ingest.stackoverflow import code_blocks, iter_answers, parse_tags

CODE = "def first(xs):\n    return xs[0] if len(xs) > 0 and xs[0] < 10 else None"
BODY = (
    "<p>Use <code>xs[0]</code> like this:</p>\n"
    f"<pre class=\"lang-py\"><code>{html.escape(CODE)}\n</code></pre>\n"
    "<p>or, shorter:</p><pre><code>print(first([1, 2]))\n</code></pre>"
)


def _attr(value: str) -> str:
    # as in the real dumps: newlines inside attributes are written as &#xA;
    return html.escape(value).replace("\n", "&#xA;")


def write_posts_xml(path):
    rows = [
        ('1', '1', '', '<p>How?</p>', '<python><list>'),
        ('2', '2', '1', BODY, ''),
        ('3', '2', '1', '<p>No code here, only <code>inline</code>.</p>', ''),
        ('4', '1', '', '<p>JS?</p>', '<javascript>'),
        ('5', '2', '4', '<pre><code>console.log(1);</code></pre>', ''),
    ]
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<posts>"]
    for id_, typ, parent, body, tags in rows:
        attrs = f'Id="{id_}" PostTypeId="{typ}" Body="{_attr(body)}"'
        attrs += f' ParentId="{parent}"' if parent else ""
        attrs += f' Tags="{_attr(tags)}"' if tags else ""
        lines.append(f"  <row {attrs} />")
    lines.append("</posts>")
    path.write_text("\n".join(lines))
    return path


def test_code_blocks_are_extracted_and_unescaped():
    assert code_blocks(BODY) == CODE + "\n\nprint(first([1, 2]))"
    assert code_blocks("<p>just <code>inline</code></p>") == ""


def test_tags_in_both_dump_formats():
    assert parse_tags("<python><list>") == {"python", "list"}
    assert parse_tags("|python|pandas|") == {"python", "pandas"}
    assert parse_tags(None) == set()


def test_posts_xml_answers_with_code(tmp_path):
    posts = write_posts_xml(tmp_path / "Posts.xml")
    assert [i for i, _ in iter_answers(posts)] == ["2", "5"]
    (only,) = iter_answers(posts, tags=("Python",))
    assert only == ("2", CODE + "\n\nprint(first([1, 2]))")


def test_parquet_export(tmp_path):
    table = pa.table({
        "Id": [10, 11, 12], "PostTypeId": [1, 2, 2], "ParentId": [None, 10, 10],
        "Body": ["<p>q</p>", BODY, "<p>none</p>"], "Tags": ["|python|", None, None],
    })
    pq.write_table(table, tmp_path / "posts.parquet")
    assert list(iter_answers(tmp_path / "posts.parquet", tags=("python",))) == [
        ("11", CODE + "\n\nprint(first([1, 2]))")
    ]


def test_malformed_xml_names_the_file(tmp_path):
    bad = tmp_path / "Posts.xml"
    bad.write_text('<posts><row Id="1" PostTypeId="2" Body="x"')
    with pytest.raises(Phi1Error, match="Posts.xml: not a valid Posts.xml"):
        list(iter_answers(bad))
