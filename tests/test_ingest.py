import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_core import CATEGORIES
from spark_core.config import DataConfig
from spark_core.data.questions import (
    ingest_records,
    proportional_allocation,
    sample,
    split,
    validate,
)
from spark_core.data.sources import RawRecord, SourceError, read_file, read_source, source_kind


def row(qid=1, **over):
    base = {
        "question_id": qid,
        "question": f"What is {qid} + 1?",
        "options": [str(qid), str(qid + 1), str(qid + 2), "N/A"],
        "answer": "B",
        "answer_index": 1,
        "cot_content": "",
        "category": "math",
        "src": "test",
    }
    base.update(over)
    return base


def recs(*rows):
    return [RawRecord(f"line {i + 1}", r) for i, r in enumerate(rows)]


def reasons(rows):
    return [r["reason"] for r in validate(recs(*rows)).rejected]


def test_bundled_sample_covers_every_category_with_correct_answers():
    records = read_source("bundled")
    checked = validate(records)
    assert checked.rejected == []
    per_cat = Counter(r["category"] for r in checked.accepted)
    assert set(per_cat) == set(CATEGORIES)
    assert min(per_cat.values()) >= 5
    for r in checked.accepted:
        assert r["options"][r["answer_index"]] and r["answer"] == "ABCDEFGHIJ"[r["answer_index"]]
        assert f"The answer is ({r['answer']})" in r["cot_content"]


def test_rejection_reasons_are_specific():
    assert reasons([row(question="  ")]) == ["missing or empty field 'question'"]
    assert reasons([row(options=None)]) == ["missing or empty field 'options'"]
    assert reasons([row(category="astrology")])[0].startswith("unknown category 'astrology'")
    assert reasons([row(options=["only one"], answer="A", answer_index=0)]) == [
        "1 options after removing 'N/A' padding (need 2 to 10)"
    ]
    eleven = [str(i) for i in range(11)]
    assert "11 options" in reasons([row(options=eleven)])[0]
    assert reasons([row(answer="C", answer_index=1)]) == [
        "answer letter 'C' disagrees with answer_index 1 (index 1 is letter 'B'; "
        "letter 'C' is index 2)"
    ]
    assert reasons([row(answer="Z")]) == ["answer 'Z' is not a letter A-J"]
    assert "outside the 4 options" in reasons([row(answer="J", answer_index=9)])[0]
    assert reasons([row(answer="D", answer_index=3)]) == ["the answer option 'D' is 'N/A' padding"]


def test_duplicate_question_id_keeps_the_first():
    checked = validate(recs(row(7), row(7, question="Another?")))
    assert [r["question"] for r in checked.accepted] == ["What is 7 + 1?"]
    assert checked.rejected[0]["reason"] == "duplicate question_id 7 (first seen at line 1)"
    assert checked.rejected[0]["location"] == "line 2"
    assert json.loads(checked.rejected[0]["record"])["question"] == "Another?"


def test_na_padding_is_stripped_and_answer_index_follows_its_option():
    padded = row(options=["N/A", "a", " n/a ", "b", "c", "N/A"], answer="D", answer_index=3)
    (clean,) = validate(recs(padded)).accepted
    assert clean["options"] == ["a", "b", "c"]
    assert (clean["answer"], clean["answer_index"]) == ("B", 1)


def many(n_per_cat=8):
    rows, qid = [], 1
    for cat in CATEGORIES:
        for _ in range(n_per_cat):
            rows.append({**row(qid), "category": cat, "options": ["x", "y", "z"]})
            qid += 1
    return validate(recs(*rows)).accepted


def test_sampling_is_stratified_and_seeded():
    rows = many()
    a = sample(rows, DataConfig(per_category=3, seed=1))
    assert Counter(r["category"] for r in a) == {c: 3 for c in CATEGORIES}
    assert [r["question_id"] for r in a] == [
        r["question_id"] for r in sample(rows, DataConfig(per_category=3, seed=1))
    ]
    assert [r["question_id"] for r in a] != [
        r["question_id"] for r in sample(rows, DataConfig(per_category=3, seed=2))
    ]
    only = sample(rows, DataConfig(per_category=2, categories=["law", "math"]))
    assert Counter(r["category"] for r in only) == {"law": 2, "math": 2}


def test_proportional_allocation_sums_to_total():
    alloc = proportional_allocation({"a": 50, "b": 30, "c": 20}, 11)
    assert sum(alloc.values()) == 11 and alloc == {"a": 6, "b": 3, "c": 2}
    assert proportional_allocation({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}
    rows = sample(many(), DataConfig(total=30))
    assert len(rows) == 30


def test_split_is_disjoint_and_stratified():
    rows = split(sample(many(), DataConfig(per_category=5)), DataConfig(eval_fraction=0.4))
    train = {r["question_id"] for r in rows if r["split"] == "train"}
    evals = {r["question_id"] for r in rows if r["split"] == "eval"}
    assert train.isdisjoint(evals) and len(train | evals) == len(rows) == 70
    assert Counter(r["category"] for r in rows if r["split"] == "eval") == {
        c: 2 for c in CATEGORIES
    }


def test_ingest_records_builds_the_declared_tables():
    result = ingest_records(recs(row(1), row(2, answer="A")), DataConfig(eval_fraction=0.5))
    assert result.questions.num_rows == 1 and result.rejected.num_rows == 1
    assert result.stats["accepted"] == 1 and result.stats["rejected"] == 1
    assert result.questions.column("options").to_pylist() == [["1", "2", "3"]]


# --- malformed sources: a clear, located error ------------------------------------------------


def test_broken_jsonl_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(row(1)) + "\n" + '{"question_id": 2, "question": "oops"\n')
    with pytest.raises(SourceError, match=r"q\.jsonl: line 2: not valid JSON"):
        read_file(str(path))


def test_wrong_type_in_jsonl_names_line_and_column(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(row(1)) + "\n" + json.dumps(row(2, answer_index="one")) + "\n")
    with pytest.raises(SourceError, match=r"q\.jsonl: line 2, column 'answer_index': expected int"):
        read_file(str(path))


def test_wrong_type_column_in_parquet(tmp_path):
    path = tmp_path / "q.parquet"
    table = pa.Table.from_pylist([row(1), row(2)])
    table = table.set_column(0, "question_id", pa.array(["1", "2"]))
    pq.write_table(table, path)
    with pytest.raises(
        SourceError, match=r"q\.parquet: row 0, column 'question_id': column has type string"
    ):
        read_file(str(path))


def test_empty_and_missing_files(tmp_path):
    for name in ("e.jsonl", "e.json", "e.parquet"):
        (tmp_path / name).write_text("")
        with pytest.raises(SourceError, match=f"{name}: file is empty"):
            read_file(str(tmp_path / name))
    with pytest.raises(SourceError, match="file not found"):
        read_file(str(tmp_path / "nope.jsonl"))
    with pytest.raises(SourceError, match="expected 'bundled'"):
        source_kind("questions.csv")
    assert source_kind("TIGER-Lab/MMLU-Pro") == "hub"


def test_json_list_source(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([row(1), row(2)]))
    assert [r.location for r in read_file(str(path))] == ["row 0", "row 1"]


# --- the real MMLU-Pro test split (skips where ../shared/data is absent) ------------------------


@pytest.fixture(scope="module")
def real_ingest(mmlu_pro_test):
    return validate(read_file(str(mmlu_pro_test)))


def test_real_mmlu_pro_validation(real_ingest):
    assert len(real_ingest.accepted) == 12031
    (bad,) = real_ingest.rejected
    assert bad["question_id"] == 3983
    assert "answer letter 'C' disagrees with answer_index 1" in bad["reason"]
    assert all(2 <= len(r["options"]) <= 10 for r in real_ingest.accepted)
    assert not any(o.upper() == "N/A" for r in real_ingest.accepted for o in r["options"])


def test_real_mmlu_pro_sampling(real_ingest):
    picked = sample(real_ingest.accepted, DataConfig(per_category=10, seed=0))
    assert len(picked) == 140
    assert Counter(r["category"] for r in picked) == {c: 10 for c in CATEGORIES}
    again = sample(real_ingest.accepted, DataConfig(per_category=10, seed=0))
    other = sample(real_ingest.accepted, DataConfig(per_category=10, seed=1))
    ids = [r["question_id"] for r in picked]
    assert ids == [r["question_id"] for r in again]
    assert ids != [r["question_id"] for r in other]
