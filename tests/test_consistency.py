"""Logical-consistency rules: violations counted by hand, parsing refusals, the protocol's new metric, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.data.composed import compose_source
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import evaluate
from pretrainlab.eval.consistency import RULES_KEY, parse_rules, violation_share, violations

CLASSES = ["cat", "dog", "bird", "fish"]
RULES = """
rules:
  - exclusive: [cat, dog]
  - implies: {if: bird, then: [fish]}
  - exactly: 1
    of: [dog, bird]
  - at_most: 2
  - at_least: 1
"""


def test_violations_match_a_hand_count() -> None:
    predicted = torch.tensor([[1, 0, 0, 0],    # cat only: breaks exactly-1-of(dog, bird)
                              [1, 1, 0, 0],    # cat + dog: exclusive; exactly-1 holds (dog)
                              [0, 0, 1, 1],    # bird + fish: all hold
                              [0, 0, 1, 0],    # bird without fish: implies
                              [0, 1, 1, 1],    # three present: exactly-1 (dog and bird), at_most 2
                              [0, 0, 0, 0]]).bool()  # nothing: exactly-1, at_least 1
    expected = torch.tensor([[0, 0, 1, 0, 0],
                             [1, 0, 0, 0, 0],
                             [0, 0, 0, 0, 0],
                             [0, 1, 0, 0, 0],
                             [0, 0, 1, 1, 0],
                             [0, 0, 1, 0, 1]]).bool()
    rules = parse_rules(RULES, CLASSES)
    assert [rule.kind for rule in rules] == ["exclusive", "implies", "exactly", "at_most", "at_least"]
    assert torch.equal(violations(predicted, rules), expected)
    assert violation_share(predicted, rules) == pytest.approx(5 / 6 * 100)
    both_premises = parse_rules("- implies: {if: [cat, dog], then: bird}", CLASSES)  # a bare list; if: all of them
    assert violations(predicted, both_premises)[:, 0].tolist() == [False, True, False, False, False, False]


@pytest.mark.parametrize(("text", "message"), [
    ("- exclusive: [cat, dgo]", "unknown class 'dgo'; did you mean 'dog'"),
    ("- implies: {if: horse, then: [cat]}", "unknown class 'horse'"),
    ("- exclusive: [cat]", "at least two classes"),
    ("- at_most: 5", "more than the 4 classes"),
    ("- exactly: -1\n  of: [cat, dog]", "whole number >= 0"),
    ("- exactly: 1.5", "whole number >= 0"),
    ("- forbid: [cat, dog]", "exactly one of exclusive"),
    ("- exclusive: [cat, dog]\n  of: [cat]", "exactly one of exclusive"),
    ("- implies: [cat, dog]", "'implies' takes"),
    ("rules: []", "non-empty list"),
    ("rules: [exclusive: [cat, dog]", "not valid YAML"),
    ("- cat", "a rule is a mapping"),
])
def test_bad_rules_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(PretrainlabError, match=message.replace("(", r"\(")) as error:
        parse_rules(text, CLASSES)
    assert "\n" not in str(error.value)


def test_composed_canvases_ship_rules_their_ground_truth_keeps(builtin_source) -> None:
    source = compose_source(builtin_source, 80)
    rules = parse_rules(source.extra[RULES_KEY], source.classes)
    assert [(rule.kind, rule.count) for rule in rules] == [("at_least", 1), ("at_most", 4)]
    for split in (source.train, source.test):
        labels = torch.from_numpy(split.multilabels).bool()
        counts = labels.sum(dim=1)
        assert int(counts.min()) >= 1 and int(counts.max()) <= 4  # independent of the rule code
        assert violation_share(labels, rules) == 0.0


def test_protocol_reports_rule_violations_beside_map(tmp_path: Path) -> None:
    from test_multilabel import features_of_present_classes, multilabel_context

    rng = np.random.default_rng(0)
    labels = [np.eye(4, dtype=np.int64)[rng.integers(0, 2, n)] for n in (300, 100)]  # exactly one of classes 0, 1
    for label in labels:
        label[:, 2:] = rng.integers(0, 2, (len(label), 2))  # classes 2 and 3 independent: both present in ~1/4
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text("rules:\n  - exactly: 1\n    of: ['0', '1']\n  - exclusive: ['2', '3']\n")
    context = multilabel_context(*((features_of_present_classes(label, 0.3, seed), label)
                                   for seed, label in enumerate(labels, start=1)))
    context.options["rules"] = str(rule_file)
    results = {result.metric: result for result in evaluate(context, "multilabel")}
    assert results["subset_accuracy"].value == 100.0  # predictions are the labels, so they break what the labels do
    both = float((labels[1][:, 2] & labels[1][:, 3]).mean()) * 100  # counted on the test labels directly
    assert 10 < both < 40
    violated = results["rule_violations"]
    assert violated.value == pytest.approx(both) and not violated.higher_is_better
    assert violated.settings["rule_violations_per_rule"] == [0.0, pytest.approx(both, abs=1e-3)]
    assert violated.settings["rule_violations_ground_truth"] == pytest.approx(both)
    assert violated.settings["rules_from"] == str(rule_file) and len(violated.settings["rules"]) == 2


def test_cli_refuses_unknown_class_names_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text("rules:\n  - exclusive: ['3', 'three']\n")
    for path, message in ((rule_file, "unknown class 'three'"), (tmp_path / "missing.yaml", "does not exist")):
        code = main(["eval", "timm:tinycnn", "--data", "composed:builtin:8", "--protocol", "multilabel",
                     "--option", f"rules={path}", "--no-store"])
        error = capsys.readouterr().err.strip()
        assert code == 2 and error.startswith("error:") and message in error and "\n" not in error
