"""hf_prune.data: registered evaluation sets normalized to one schema, local data, Hub load / upload.

No test touches the network: ``datasets.load_dataset`` is replaced by a stand-in that serves small
in-memory tables with each real Hub set's raw column layout, and ``Dataset.push_to_hub`` by a recorder.
Expected rows are written out by hand from the raw rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import datasets
import pytest
from huggingface_hub import RepoUrl, constants

from hf_prune.data import (
    EVAL_DATASETS,
    EVAL_FEATURES,
    EVAL_SCHEMA,
    GSM8K_LITE_SEED,
    GSM8K_LITE_SIZE,
    load_dataset_from_hub,
    load_eval_dataset,
    upload_dataset_to_hub,
    validate_eval_schema,
)

# ------------------------------------------------------------------ raw rows in each Hub set's layout
GSM8K_JANET = {
    "question": "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
    "fresh duck egg. How much in dollars does she make every day at the farmers' market?",
    "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every "
    "day at the farmer's market.\n#### 18",
}
GSM8K_ROWS = [GSM8K_JANET] + [
    {"question": f"What is {i} plus 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
    for i in range(1, 300)
]

ARC_ROWS = [
    {
        "id": "Mercury_7175875",
        "question": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the "
        "most likely effect of this increase in rotation?",
        "choices": {
            "text": [
                "Planetary density will decrease.",
                "Planetary years will become longer.",
                "Planetary days will become shorter.",
                "Planetary gravity will become stronger.",
            ],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "C",
    },
    {
        # ARC also has digit keys.
        "id": "NYSEDREGENTS_2015_4_8",
        "question": "Which of these is a renewable resource?",
        "choices": {"text": ["coal", "oil", "wind", "natural gas"], "label": ["1", "2", "3", "4"]},
        "answerKey": "3",
    },
    {
        "id": "Mercury_SC_405487",
        "question": "Which part of a plant takes in water from the soil? ",
        "choices": {"text": ["leaf", "root", "flower"], "label": ["A", "B", "C"]},
        "answerKey": "B",
    },
]

SCIQ_ROWS = [
    {
        "question": "What type of organism is commonly used in preparation of foods such as cheese and yogurt?",
        "distractor3": "viruses",
        "distractor1": "protozoa",
        "distractor2": "gymnosperms",
        "correct_answer": "mesophilic organisms",
        "support": "Mesophiles grow best in moderate temperature.",
    },
    {
        "question": "What phenomenon makes global winds blow northeast to southwest or the reverse in the "
        "northern hemisphere?",
        "distractor3": "tropical effect",
        "distractor1": "muon effect",
        "distractor2": "centrifugal effect",
        "correct_answer": "coriolis effect",
        "support": "",
    },
]

TQA_NAURU = "Nauru is the smallest country in the world that is at least one square mile in area."
TQA_VATICAN = "The smallest country in the world that is at least one square mile in area is Vatican City."
TQA_MONACO = "The smallest country in the world that is at least one square mile in area is Monaco."
TQA_US = "The smallest country in the world that is at least one square mile in area is the United States."
TRUTHFUL_QA_ROWS = [
    {
        "question": "What is the smallest country in the world that is at least one square mile in area?",
        "mc1_targets": {"choices": [TQA_NAURU, TQA_VATICAN, TQA_MONACO, TQA_US], "labels": [1, 0, 0, 0]},
        "mc2_targets": {"choices": [TQA_NAURU, TQA_VATICAN], "labels": [1, 0]},
    }
]

OPENBOOKQA_ROWS = [
    {
        "id": "7-980",
        "question_stem": "The sun is responsible for",
        "choices": {
            "text": [
                "puppies learning new tricks",
                "children growing up and getting old",
                "flowers wilting in a vase",
                "plants sprouting, blooming and wilting",
            ],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "D",
    }
]

TRIVIA_QA_ROWS = [
    {
        "question": "Which American-born Sinclair won the Nobel Prize for Literature in 1930?",
        "question_id": "tc_1",
        "question_source": "http://www.triviacountry.com/",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        },
        "answer": {
            "aliases": ["Sinclair Lewis", "Harry Sinclair Lewis"],
            "normalized_aliases": ["sinclair lewis", "harry sinclair lewis"],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": "sinclair lewis",
            "type": "WikipediaEntity",
            "value": "Sinclair Lewis",
        },
    },
    {
        "question": "Where in England was Dame Judi Dench born?",
        "question_id": "tc_3",
        "question_source": "http://www.triviacountry.com/",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        },
        "answer": {
            "aliases": ["York", "York, England"],
            "normalized_aliases": ["york", "york england"],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": "york",
            "type": "WikipediaEntity",
            "value": "York",
        },
    },
]

# (repo, config) -> rows; the split asked for is recorded, every split serves the same rows.
RAW = {
    ("openai/gsm8k", "main"): GSM8K_ROWS,
    ("allenai/ai2_arc", "ARC-Easy"): ARC_ROWS,
    ("allenai/sciq", None): SCIQ_ROWS,
    ("truthfulqa/truthful_qa", "multiple_choice"): TRUTHFUL_QA_ROWS,
    ("allenai/openbookqa", "main"): OPENBOOKQA_ROWS,
    ("mandarjoshi/trivia_qa", "rc.nocontext"): TRIVIA_QA_ROWS,
}


# ------------------------------------------------------------------ expected normalized rows (by hand)
def _row(prompt: str, answer: str, choices: list[str], label: int, source: str, id_: str) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "answer": answer,
        "choices": choices,
        "label": label,
        "source": source,
        "id": id_,
    }


EXPECTED = {
    "arc_easy": [
        _row(
            "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is "
            "the most likely effect of this increase in rotation?\nAnswer:",
            "Planetary days will become shorter.",
            [
                "Planetary density will decrease.",
                "Planetary years will become longer.",
                "Planetary days will become shorter.",
                "Planetary gravity will become stronger.",
            ],
            2,
            "arc_easy",
            "Mercury_7175875",
        ),
        _row(
            "Question: Which of these is a renewable resource?\nAnswer:",
            "wind",
            ["coal", "oil", "wind", "natural gas"],
            2,
            "arc_easy",
            "NYSEDREGENTS_2015_4_8",
        ),
        _row(
            "Question: Which part of a plant takes in water from the soil?\nAnswer:",
            "root",
            ["leaf", "root", "flower"],
            1,
            "arc_easy",
            "Mercury_SC_405487",
        ),
    ],
    # SciQ / TruthfulQA options are shuffled by a seed taken from the question: the orders below are
    # permutations of [correct_answer, distractor1, distractor2, distractor3] / the mc1 choices, and the
    # label points at the gold option.
    "sciq": [
        _row(
            "Mesophiles grow best in moderate temperature.\nQuestion: What type of organism is commonly used in "
            "preparation of foods such as cheese and yogurt?\nAnswer:",
            "mesophilic organisms",
            ["viruses", "protozoa", "mesophilic organisms", "gymnosperms"],
            2,
            "sciq",
            "test-0",
        ),
        _row(
            # An empty support paragraph adds no line.
            "Question: What phenomenon makes global winds blow northeast to southwest or the reverse in the "
            "northern hemisphere?\nAnswer:",
            "coriolis effect",
            ["coriolis effect", "muon effect", "tropical effect", "centrifugal effect"],
            0,
            "sciq",
            "test-1",
        ),
    ],
    "truthful_qa": [
        _row(
            "Question: What is the smallest country in the world that is at least one square mile in area?\n"
            "Answer:",
            TQA_NAURU,
            [TQA_MONACO, TQA_NAURU, TQA_VATICAN, TQA_US],
            1,
            "truthful_qa",
            "validation-0",
        )
    ],
    "openbookqa": [
        _row(
            "Question: The sun is responsible for\nAnswer:",
            "plants sprouting, blooming and wilting",
            [
                "puppies learning new tricks",
                "children growing up and getting old",
                "flowers wilting in a vase",
                "plants sprouting, blooming and wilting",
            ],
            3,
            "openbookqa",
            "7-980",
        )
    ],
    "trivia_qa": [
        _row(
            "Question: Which American-born Sinclair won the Nobel Prize for Literature in 1930?\nAnswer:",
            "Sinclair Lewis",
            [],
            -1,
            "trivia_qa",
            "tc_1",
        ),
        _row(
            "Question: Where in England was Dame Judi Dench born?\nAnswer:",
            "York",
            [],
            -1,
            "trivia_qa",
            "tc_3",
        ),
    ],
}

GSM8K_JANET_ROW = _row("Question: " + GSM8K_JANET["question"] + "\nAnswer:", "18", [], -1, "gsm8k", "test-0")


def _normalized_rows() -> list[dict[str, Any]]:
    return [
        _row("Question: 2+2?\nAnswer:", "4", [], -1, "mine", "a"),
        _row("Question: Sky colour?\nAnswer:", "blue", ["red", "blue"], 1, "mine", "b"),
        _row("Question: 3*3?\nAnswer:", "9", [], -1, "mine", "c"),
    ]


class FakeHub:
    """Stands in for ``datasets.load_dataset``: serves RAW tables and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, dict[str, Any]]] = []
        self.repos: dict[str, datasets.Dataset] = {}  # plain repos for load_dataset_from_hub
        self._cache: dict[tuple[str, str | None], datasets.Dataset] = {}

    def __call__(self, path: str, name: str | None = None, **kwargs: Any) -> datasets.Dataset:
        self.calls.append((path, name, kwargs))
        if path in self.repos:
            return self.repos[path]
        if (path, name) not in RAW:
            raise AssertionError(f"unexpected load_dataset({path!r}, {name!r})")
        if (path, name) not in self._cache:
            self._cache[(path, name)] = datasets.Dataset.from_list(RAW[(path, name)])
        return self._cache[(path, name)]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"datasets.load_dataset called with {args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


# ------------------------------------------------------------------ registry
def test_registry_maps_each_name_to_its_hub_repo_and_evaluation_split():
    expected = {
        "gsm8k-lite": ("openai/gsm8k", "main", "test"),
        "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
        "sciq": ("allenai/sciq", None, "test"),
        "truthful_qa": ("truthfulqa/truthful_qa", "multiple_choice", "validation"),
        "openbookqa": ("allenai/openbookqa", "main", "test"),
        "trivia_qa": ("mandarjoshi/trivia_qa", "rc.nocontext", "validation"),
    }
    assert set(expected) <= set(EVAL_DATASETS.names())
    for name, (repo, config, split) in expected.items():
        hub = EVAL_DATASETS.get(name).hub
        assert (hub.path, hub.name, hub.split) == (repo, config, split), name
    assert list(EVAL_SCHEMA) == ["prompt", "answer", "choices", "label", "source", "id"]


# ------------------------------------------------------------------ normalizers against raw layouts
@pytest.mark.parametrize("name", ["arc_easy", "sciq", "truthful_qa", "openbookqa", "trivia_qa"])
def test_registered_set_normalizes_raw_rows_exactly(hub, name):
    ds = load_eval_dataset(name)
    assert ds.features == EVAL_FEATURES
    assert ds.to_list() == EXPECTED[name]
    hub_spec = EVAL_DATASETS.get(name).hub
    assert [(p, c, kw["split"]) for p, c, kw in hub.calls] == [(hub_spec.path, hub_spec.name, hub_spec.split)]


def test_shuffled_options_do_not_depend_on_row_position(hub):
    # The order comes from the question text, so the same row gets the same order at any position.
    reversed_rows = datasets.Dataset.from_list(SCIQ_ROWS[::-1])
    ds = load_eval_dataset(reversed_rows, schema="sciq")
    assert [r["choices"] for r in ds] == [r["choices"] for r in EXPECTED["sciq"][::-1]]
    assert [r["label"] for r in ds] == [r["label"] for r in EXPECTED["sciq"][::-1]]
    for raw, row in zip(SCIQ_ROWS, EXPECTED["sciq"], strict=True):
        options = [raw["correct_answer"], raw["distractor1"], raw["distractor2"], raw["distractor3"]]
        assert sorted(row["choices"]) == sorted(options)
        assert row["choices"][row["label"]] == raw["correct_answer"]


def test_gsm8k_answer_is_the_text_after_the_marker(hub):
    ds = load_eval_dataset("gsm8k", n=3, seed=0)
    full = load_eval_dataset("gsm8k")
    assert len(full) == 300
    assert full[0] == GSM8K_JANET_ROW
    assert full[41]["answer"] == "42" and full[41]["id"] == "test-41"
    assert len(ds) == 3 and all(r["source"] == "gsm8k" for r in ds)


def test_gsm8k_lite_is_a_fixed_seeded_subset_of_test(hub):
    lite = load_eval_dataset("gsm8k-lite")
    # By hand: the first GSM8K_LITE_SIZE positions of a permutation seeded with GSM8K_LITE_SEED, in order.
    order = list(range(300))
    random.Random(GSM8K_LITE_SEED).shuffle(order)
    expected_ids = [f"test-{i}" for i in sorted(order[:GSM8K_LITE_SIZE])]
    assert len(lite) == GSM8K_LITE_SIZE == 250
    assert lite["id"] == expected_ids
    assert set(lite["source"]) == {"gsm8k-lite"}
    for row in lite:
        i = int(row["id"].split("-")[1])
        assert row["answer"] == ("18" if i == 0 else str(i + 1))
        assert row["prompt"] == "Question: " + GSM8K_ROWS[i]["question"] + "\nAnswer:"
    # ``seed`` does not change which problems gsm8k-lite is; it only draws ``n`` of them.
    assert load_eval_dataset("gsm8k-lite", seed=7)["id"] == expected_ids
    assert all(kw["split"] == "test" for _, _, kw in hub.calls)


def test_n_draws_reproducible_nested_subsets(hub):
    a = load_eval_dataset("gsm8k-lite", n=20, seed=3)
    b = load_eval_dataset("gsm8k-lite", n=20, seed=3)
    c = load_eval_dataset("gsm8k-lite", n=20, seed=4)
    small = load_eval_dataset("gsm8k-lite", n=5, seed=3)
    lite_ids = set(load_eval_dataset("gsm8k-lite")["id"])
    assert len(a) == 20 and a.to_list() == b.to_list()
    assert a["id"] != c["id"]
    assert set(a["id"]) <= lite_ids and set(c["id"]) <= lite_ids
    assert set(small["id"]) < set(a["id"])  # a smaller n picks a subset of a larger one
    # Kept in original order.
    positions = [int(i.split("-")[1]) for i in a["id"]]
    assert positions == sorted(positions)
    # n larger than the set keeps every row ("at most n").
    assert len(load_eval_dataset("arc_easy", n=50)) == 3


def test_list_concatenates_with_n_per_set_and_keeps_source(hub):
    ds = load_eval_dataset(["arc_easy", "trivia_qa", "gsm8k-lite"], n=2, seed=1)
    assert ds.features == EVAL_FEATURES
    assert ds["source"] == ["arc_easy"] * 2 + ["trivia_qa"] * 2 + ["gsm8k-lite"] * 2
    assert ds.to_list()[2:4] == EXPECTED["trivia_qa"]
    arc = ds.to_list()[:2]
    assert all(row in EXPECTED["arc_easy"] for row in arc)
    assert arc == load_eval_dataset("arc_easy", n=2, seed=1).to_list()


def test_split_override_reaches_load_dataset(hub):
    load_eval_dataset(["arc_easy", "sciq"], split="validation")
    assert [(p, kw["split"]) for p, _, kw in hub.calls] == [
        ("allenai/ai2_arc", "validation"),
        ("allenai/sciq", "validation"),
    ]
    # ids of rows without their own id name the split they came from
    assert load_eval_dataset("sciq", split="validation")["id"] == ["validation-0", "validation-1"]


# ------------------------------------------------------------------ local data
def test_data_dir_reads_raw_and_normalized_local_copies(tmp_path, no_hub):
    with open(tmp_path / "arc_easy.jsonl", "w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in ARC_ROWS)
    datasets.Dataset.from_list(SCIQ_ROWS).save_to_disk(str(tmp_path / "sciq"))
    # gsm8k-lite falls back to a raw copy of GSM8K named "gsm8k" and takes its fixed subset there.
    datasets.Dataset.from_list(GSM8K_ROWS).to_parquet(str(tmp_path / "gsm8k.parquet"))
    ds = load_eval_dataset(["arc_easy", "sciq", "gsm8k-lite"], data_dir=tmp_path)
    assert ds.to_list()[:5] == EXPECTED["arc_easy"] + EXPECTED["sciq"]
    assert len(ds) == 5 + GSM8K_LITE_SIZE
    # A normalized copy is taken as it is (no second subset).
    normalized = _normalized_rows()
    with open(tmp_path / "trivia_qa.json", "w") as fh:
        json.dump(normalized, fh)
    assert load_eval_dataset("trivia_qa", data_dir=str(tmp_path)).to_list() == normalized
    with pytest.raises(ValueError, match=r"holds no copy of 'openbookqa'.*openbookqa\.jsonl"):
        load_eval_dataset("openbookqa", data_dir=tmp_path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv", "save_to_disk"])
def test_local_file_with_the_schema_is_used_as_is(tmp_path, no_hub, fmt):
    rows = _normalized_rows()
    table = datasets.Dataset.from_list(rows)
    if fmt == "jsonl":
        path = tmp_path / "eval.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path = tmp_path / "eval.json"
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        path = tmp_path / "eval.parquet"
        table.to_parquet(str(path))
    elif fmt == "csv":
        # CSV cells cannot hold lists: choices is a JSON list there, and numeric ids come back as str.
        path = tmp_path / "eval.csv"
        lines = ["prompt,answer,choices,label,source,id"]
        lines += [
            '"Question: 2+2?\nAnswer:",4,[],-1,mine,1',
            '"Question: Sky?\nAnswer:",blue,"[""red"", ""blue""]",1,mine,2',
        ]
        path.write_text("\n".join(lines) + "\n")
        rows = [
            _row("Question: 2+2?\nAnswer:", "4", [], -1, "mine", "1"),
            _row("Question: Sky?\nAnswer:", "blue", ["red", "blue"], 1, "mine", "2"),
        ]
    else:
        path = tmp_path / "saved"
        datasets.DatasetDict({"test": table, "train": table.select([0])}).save_to_disk(str(path))
    ds = load_eval_dataset(path, split="test" if fmt == "save_to_disk" else None)
    assert ds.features == EVAL_FEATURES
    assert ds.to_list() == rows
    assert load_eval_dataset(str(path), n=2, seed=0, split="test").num_rows == 2


def test_save_to_disk_folder_with_several_splits_needs_split(tmp_path, no_hub):
    table = datasets.Dataset.from_list(_normalized_rows())
    datasets.DatasetDict({"test": table, "train": table}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"several splits.*\['test', 'train'\]"):
        load_eval_dataset(tmp_path / "dd")


def test_in_memory_dataset_with_extra_columns_and_null_typed_empty_choices(no_hub):
    rows = [{**r, "choices": [], "label": -1, "answer": r["answer"], "extra": 1} for r in _normalized_rows()]
    table = datasets.Dataset.from_list(rows)
    assert table.features["choices"].feature.dtype == "null"  # how a reader types all-empty lists
    ds = load_eval_dataset(table)
    assert ds.column_names == list(EVAL_SCHEMA)
    assert ds.features == EVAL_FEATURES
    assert ds["answer"] == ["4", "blue", "9"] and ds["choices"] == [[], [], []]


def test_raw_local_data_needs_schema_argument(tmp_path, no_hub):
    path = tmp_path / "arc_raw.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ARC_ROWS))
    with pytest.raises(
        ValueError, match=r"missing column\(s\) \['prompt', 'answer', 'label', 'source'\]"
    ) as err:
        load_eval_dataset(path)
    assert "Required schema: prompt (str), answer (str), choices (list[str]), label (int)" in str(err.value)
    assert "schema='arc_easy'" in str(err.value)
    ds = load_eval_dataset(path, schema="arc_easy")
    # Same normalization as the Hub copy; source names the schema.
    assert ds.to_list() == EXPECTED["arc_easy"]
    # In memory, and concatenated with a normalized set (schema applies only to data without the schema).
    normalized = tmp_path / "normalized.jsonl"
    normalized.write_text("".join(json.dumps(r) + "\n" for r in _normalized_rows()))
    mixed = load_eval_dataset(
        [datasets.Dataset.from_list(TRUTHFUL_QA_ROWS), normalized], schema="truthful_qa"
    )
    assert mixed.to_list() == [{**EXPECTED["truthful_qa"][0], "id": "row-0"}, *_normalized_rows()]
    assert mixed["source"] == ["truthful_qa", "mine", "mine", "mine"]
    with pytest.raises(
        ValueError, match=r"raw layout of 'truthful_qa': missing raw column\(s\) \['mc1_targets'\]"
    ):
        load_eval_dataset(path, schema="truthful_qa")


def test_local_data_with_bad_types_or_values_is_rejected(tmp_path, no_hub):
    bad_type = [{**r, "label": str(r["label"])} for r in _normalized_rows()]
    with pytest.raises(ValueError, match=r"column 'label' is str, expected int"):
        load_eval_dataset(datasets.Dataset.from_list(bad_type))
    bad_answer = _normalized_rows()
    bad_answer[1]["answer"] = "red"
    with pytest.raises(ValueError, match=r"row 1: answer='red' differs from choices\[1\]='blue'"):
        load_eval_dataset(datasets.Dataset.from_list(bad_answer))
    bad_label = _normalized_rows()
    bad_label[0]["label"] = 0
    with pytest.raises(ValueError, match=r"row 0: label=0 but choices is empty"):
        load_eval_dataset(datasets.Dataset.from_list(bad_label))


# ------------------------------------------------------------------ argument errors
def test_bad_arguments_raise_named_errors(tmp_path, no_hub):
    with pytest.raises(
        ValueError, match=r"Unknown evaluation dataset 'mmlu_pro'.*arc_easy.*gsm8k-lite.*trivia_qa"
    ):
        load_eval_dataset("mmlu_pro")
    for n in (0, -3):
        with pytest.raises(ValueError, match=r"n must be a positive number of rows"):
            load_eval_dataset("arc_easy", n=n)
    with pytest.raises(TypeError, match=r"^n must be an int or None, got str"):
        load_eval_dataset("arc_easy", n="5")
    with pytest.raises(TypeError, match=r"^n must be an int or None, got bool"):
        load_eval_dataset("arc_easy", n=True)
    with pytest.raises(
        TypeError, match=r"^name_or_names must be a name, a path or a datasets.Dataset, got int"
    ):
        load_eval_dataset(5)
    with pytest.raises(TypeError, match=r"^name_or_names\[1\] must be"):
        load_eval_dataset(["arc_easy", {"prompt": "x"}])
    with pytest.raises(TypeError, match=r"^seed must be an int"):
        load_eval_dataset("arc_easy", seed=1.5)
    with pytest.raises(TypeError, match=r"^split must be a str"):
        load_eval_dataset("arc_easy", split=["test"])
    with pytest.raises(ValueError, match=r"Unknown evaluation dataset 'arc'.*arc_easy"):
        load_eval_dataset("arc_easy", schema="arc")
    with pytest.raises(ValueError, match=r"empty list"):
        load_eval_dataset([])
    with pytest.raises(ValueError, match=r"lists \['sciq'\] more than once"):
        load_eval_dataset(["sciq", "arc_easy", "sciq"])
    with pytest.raises(ValueError, match=r"data_dir=.* is not a folder"):
        load_eval_dataset("sciq", data_dir=tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"Unsupported evaluation data file type '.txt'"):
        load_eval_dataset(tmp_path / "notes.txt")


# ------------------------------------------------------------------ validate_eval_schema
def test_validate_eval_schema_on_rows_and_tables():
    ds = validate_eval_schema(_normalized_rows())
    assert isinstance(ds, datasets.Dataset) and ds.features == EVAL_FEATURES
    assert ds.to_list() == _normalized_rows()
    missing = [{k: v for k, v in r.items() if k not in ("label", "id")} for r in _normalized_rows()]
    with pytest.raises(
        ValueError,
        match=r"\(row 0\) does not have the evaluation schema: missing column\(s\) \['label', 'id'\]",
    ):
        validate_eval_schema(missing)
    with pytest.raises(ValueError, match=r"column 'label' is bool, expected int"):
        validate_eval_schema([{**_normalized_rows()[0], "label": True}])
    with pytest.raises(ValueError, match=r"column 'choices' is list\[int\], expected list\[str\]"):
        validate_eval_schema(datasets.Dataset.from_list([{**_normalized_rows()[1], "choices": [1, 2]}]))
    with pytest.raises(ValueError, match=r"row 0: \['answer'\] is null"):
        validate_eval_schema([{**_normalized_rows()[0], "answer": None}])
    with pytest.raises(TypeError, match=r"data must be a datasets.Dataset or a list of dicts, got str"):
        validate_eval_schema("rows.jsonl")
    with pytest.raises(TypeError, match=r"one split.*\['train'\]"):
        validate_eval_schema(datasets.DatasetDict({"train": ds}))


# ------------------------------------------------------------------ Hub load / upload
def test_load_dataset_from_hub_validates_the_schema(hub):
    rows = _normalized_rows()
    hub.repos["me/evals"] = datasets.Dataset.from_list([{**r, "notes": "x"} for r in rows])
    ds = load_dataset_from_hub("me/evals", split="test", revision="v1", token="hf_x")
    assert ds.to_list() == rows and ds.features == EVAL_FEATURES
    assert hub.calls[-1] == ("me/evals", None, {"split": "test", "revision": "v1", "token": "hf_x"})
    hub.repos["me/raw"] = datasets.Dataset.from_list([{"prompt": "Q", "answer": "A", "id": 3}])
    with pytest.raises(ValueError) as err:
        load_dataset_from_hub("me/raw")
    message = str(err.value)
    assert "Hub dataset me/raw (split 'train')" in message
    assert "missing column(s) ['choices', 'label', 'source']" in message
    assert "column 'id' is int, expected str" in message
    assert (
        "Required schema: prompt (str), answer (str), choices (list[str]), label (int), source (str), id (str)"
        in message
    )
    with pytest.raises(ValueError, match=r"repo_id='not a repo' is not a valid Hub repo id"):
        load_dataset_from_hub("not a repo")
    with pytest.raises(TypeError, match=r"^repo_id must be a str"):
        load_dataset_from_hub(None)


class PushRecorder:
    def __init__(self, store: Path | None = None, return_url: bool = True) -> None:
        self.pushed: list[tuple[datasets.Dataset, str, dict[str, Any]]] = []
        self.store = store
        self.return_url = return_url

    def __call__(self, table: datasets.Dataset, repo_id: str, **kwargs: Any) -> Any:
        self.pushed.append((table, repo_id, kwargs))
        if self.store is not None:
            table.to_parquet(str(self.store / f"{repo_id.replace('/', '__')}.parquet"))
        if not self.return_url:
            return None

        class Info:
            repo_url = RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

        return Info()

    def as_method(self) -> Any:
        def push_to_hub(table: datasets.Dataset, repo_id: str, **kwargs: Any) -> Any:
            return self(table, repo_id, **kwargs)

        return push_to_hub


def test_upload_pushes_the_validated_rows(monkeypatch, tmp_path):
    recorder = PushRecorder(store=tmp_path)
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", recorder.as_method())
    data = load_eval_dataset(datasets.Dataset.from_list([{**r, "scratch": 0} for r in _normalized_rows()]))
    url = upload_dataset_to_hub(data, "me/evals", token="hf_x", split="test", commit_message="add evals")
    assert url == "https://huggingface.co/datasets/me/evals"
    [(table, repo_id, kwargs)] = recorder.pushed
    assert repo_id == "me/evals"
    assert kwargs == {"split": "test", "private": True, "token": "hf_x", "commit_message": "add evals"}
    assert table.column_names == list(EVAL_SCHEMA) and table.features == EVAL_FEATURES
    assert table.to_list() == _normalized_rows()

    # Round trip: what was pushed loads back through load_dataset_from_hub unchanged.
    def from_store(path: str, name: str | None = None, **kwargs: Any) -> datasets.Dataset:
        return datasets.Dataset.from_parquet(str(tmp_path / f"{path.replace('/', '__')}.parquet"))

    monkeypatch.setattr(datasets, "load_dataset", from_store)
    assert load_dataset_from_hub("me/evals", split="test").to_list() == _normalized_rows()


def test_upload_accepts_rows_and_falls_back_to_the_endpoint_url(monkeypatch):
    recorder = PushRecorder(return_url=False)
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", recorder.as_method())
    url = upload_dataset_to_hub(_normalized_rows(), "me/rows", private=False)
    assert url == f"{constants.ENDPOINT}/datasets/me/rows"
    [(table, _, kwargs)] = recorder.pushed
    assert table.to_list() == _normalized_rows()
    assert kwargs["private"] is False and kwargs["split"] == "train"


def test_upload_rejects_bad_data_before_any_push(monkeypatch):
    recorder = PushRecorder()
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", recorder.as_method())
    no_label = [{k: v for k, v in r.items() if k != "label"} for r in _normalized_rows()]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\]. Required schema: prompt \(str\)"):
        upload_dataset_to_hub(no_label, "me/evals")
    with pytest.raises(ValueError, match=r"column 'choices' is str, expected list\[str\]"):
        upload_dataset_to_hub(
            datasets.Dataset.from_list([{**_normalized_rows()[0], "choices": "a|b"}]), "me/evals"
        )
    with pytest.raises(ValueError, match=r"has no rows"):
        upload_dataset_to_hub([], "me/evals")
    with pytest.raises(TypeError, match=r"^private must be a bool"):
        upload_dataset_to_hub(_normalized_rows(), "me/evals", private="yes")
    with pytest.raises(TypeError, match=r"^data must be a datasets.Dataset or a list of dicts"):
        upload_dataset_to_hub({"prompt": ["x"]}, "me/evals")
    assert recorder.pushed == []
