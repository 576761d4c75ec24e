"""knowledge_search: BM25 (bm25s) over a local passage corpus.

The bundled corpus holds original passages written for this project, at least 20 per MMLU-Pro
category; ``tools.corpus`` points at any Parquet/JSONL file with a ``text`` column (``title``
optional) instead. The index is built once in the sandbox worker, before calls are forked.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from spark_core.tools.base import Tool, ToolError
from spark_core.tools.textclean import normalize

TOP_K = 3
MAX_PASSAGE_CHARS = 400
_STATE: dict[str, Any] = {}


def bundled_corpus_path() -> str:
    return str(resources.files("spark_core") / "data" / "corpus.jsonl")


def load_corpus(path: str) -> list[dict[str, str]]:
    """Passages as dicts with ``title`` and ``text``; a clear error for a bad file."""
    import fsspec
    import pyarrow.parquet as pq

    source = bundled_corpus_path() if path == "bundled" else path
    if source.endswith(".parquet"):
        with fsspec.open(source, "rb") as fh:
            rows = pq.read_table(fh).to_pylist()
    elif source.endswith(".jsonl"):
        rows = []
        with fsspec.open(source, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ToolError(
                            f"{source}: line {number}: not valid JSON ({exc.msg})"
                        ) from None
    else:
        raise ToolError(f"tools.corpus {path!r}: expected 'bundled', a .parquet or a .jsonl file")
    passages = [
        {"title": str(r.get("title") or ""), "text": str(r["text"])}
        for r in rows
        if isinstance(r, dict) and r.get("text")
    ]
    if not passages:
        raise ToolError(f"{source}: no passages with a 'text' field")
    return passages


def build_index(path: str = "bundled") -> None:
    import bm25s

    passages = load_corpus(path)
    docs = [f"{p['title']}. {p['text']}" for p in passages]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
    _STATE.update(path=path, passages=passages, retriever=retriever)


def search(text: str) -> str:
    import bm25s

    query = normalize(text)
    if not query:
        raise ToolError("empty query")
    if "retriever" not in _STATE:
        build_index("bundled")
    tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
    if not any(len(ids) for ids in tokens.ids):
        raise ToolError(f"no searchable words in {query[:80]!r}")
    passages = _STATE["passages"]
    k = min(TOP_K, len(passages))
    ids, scores = _STATE["retriever"].retrieve(tokens, k=k, show_progress=False)
    hits = []
    for doc_id, score in zip(ids[0], scores[0], strict=True):
        if score <= 0:
            continue
        p = passages[int(doc_id)]
        body = (
            p["text"]
            if len(p["text"]) <= MAX_PASSAGE_CHARS
            else p["text"][:MAX_PASSAGE_CHARS] + "..."
        )
        hits.append(
            f"[{len(hits) + 1}] {p['title']}: {body}" if p["title"] else f"[{len(hits) + 1}] {body}"
        )
    return "\n".join(hits) if hits else "no matching passages"


def _prepare(config: dict) -> None:
    build_index(config.get("corpus", "bundled"))


TOOL = Tool(
    name="knowledge_search",
    description="searches a reference corpus for relevant passages.",
    input_format="a short search query with the key terms, e.g. 'Hardy-Weinberg heterozygote "
    "frequency'",
    run=search,
    prepare=_prepare,
    example="mailbox rule acceptance contract",
)
