"""Logical consistency of multi-label predictions: rules over class names, and the share of images that break one.

After the ChessVision paper (a multi-label chess-board dataset with the rules of the game as constraints;
its full title and arXiv id could not be checked from this project's offline references), which argues
that mAP alone hides predictions that are accurate class by class yet impossible as a whole (two white
kings, a board with no king). A rule file states what every image's label set must satisfy; the multilabel protocol
reports, beside mAP, the share of test images whose thresholded predictions violate at least one rule.

Rule file (YAML), a list under `rules:` (or a bare list); class names as the dataset names them:

    rules:
      - exclusive: [Sandal, Sneaker]          # at most one of these
      - implies: {if: Sneaker, then: [Bag]}   # if Sneaker then every class listed (if: a list = all of them)
      - exactly: 1                            # exactly N of `of` (every class when `of` is left out)
        of: [Trouser, Dress]
      - at_most: 4                            # at most N; `at_least: N` likewise
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from pretrainlab.errors import PretrainlabError, unknown_name_message

RULES_KEY = "rules"  # ImageSource.extra key of the rule file (YAML text) a source ships, e.g. composed canvases
COUNT_KINDS = ("exactly", "at_most", "at_least")
KINDS = ("exclusive", "implies", *COUNT_KINDS)


@dataclass(frozen=True)
class Rule:
    """One constraint on an image's predicted label set.

    Args:
        kind: one of KINDS.
        classes: the group (exclusive, counts) or the consequents (implies), as class indices.
        premise: implies only: the classes that, all present, require `classes`.
        count: counts only: N.
        text: the rule as written, for records.
    """

    kind: str
    classes: tuple[int, ...]
    premise: tuple[int, ...] = ()
    count: int = 0
    text: str = ""

    def holds(self, predicted: torch.Tensor) -> torch.Tensor:
        """predicted (M, K) bool -> (M,) bool, True where this rule is satisfied."""
        group = predicted[:, list(self.classes)]  # (M, G)
        if self.kind == "implies":
            return ~predicted[:, list(self.premise)].all(dim=1) | group.all(dim=1)
        present = group.sum(dim=1)  # (M,)
        if self.kind == "exclusive":
            return present <= 1
        if self.kind == "exactly":
            return present == self.count
        return present <= self.count if self.kind == "at_most" else present >= self.count


def violations(predicted: torch.Tensor, rules: Sequence[Rule]) -> torch.Tensor:
    """predicted (M, K) bool -> (M, R) bool, True where image m breaks rule r."""
    if not rules:
        return torch.zeros(predicted.shape[0], 0, dtype=torch.bool)
    return torch.stack([~rule.holds(predicted) for rule in rules], dim=1)


def violation_share(predicted: torch.Tensor, rules: Sequence[Rule]) -> float:
    """Percent of images (rows of predicted (M, K) bool) that break at least one rule."""
    return float(violations(predicted, rules).any(dim=1).float().mean()) * 100 if len(predicted) else 0.0


def class_indices(names: object, classes: Sequence[str], where: str) -> tuple[int, ...]:
    """A class name or a list of them -> indices; unknown names are refused with the valid ones."""
    names = names if isinstance(names, list) else [names]
    if not names:
        raise PretrainlabError(f"{where}: an empty class list")
    indices = []
    for name in names:
        if isinstance(name, (list, dict)) or name is None or str(name) not in classes:
            raise PretrainlabError(f"{where}: " + unknown_name_message("class", str(name), classes))
        indices.append(list(classes).index(str(name)))
    return tuple(indices)


def parse_rule(entry: object, classes: Sequence[str], where: str) -> Rule:
    """One YAML list item -> Rule (see the module docstring for the forms)."""
    if not isinstance(entry, dict):
        raise PretrainlabError(f"{where}: a rule is a mapping such as 'exclusive: [a, b]', got {entry!r}")
    kinds = [key for key in entry if key in KINDS]
    extra = set(entry) - set(kinds) - ({"of"} if kinds and kinds[0] in COUNT_KINDS else set())
    if len(kinds) != 1 or extra:
        raise PretrainlabError(f"{where}: each rule has exactly one of {', '.join(KINDS)} (counts may add 'of'), "
                               f"got keys {', '.join(map(str, entry))}")
    kind, value = kinds[0], entry[kinds[0]]
    text = yaml.safe_dump(entry, default_flow_style=True, width=1_000).strip()
    if kind == "exclusive":
        group = class_indices(value, classes, where)
        if len(group) < 2:
            raise PretrainlabError(f"{where}: 'exclusive' needs at least two classes, got {value!r}")
        return Rule(kind, group, text=text)
    if kind == "implies":
        if not isinstance(value, dict) or set(value) != {"if", "then"}:
            raise PretrainlabError(f"{where}: 'implies' takes {{if: CLASS, then: [CLASS, ...]}}, got {value!r}")
        return Rule(kind, class_indices(value["then"], classes, where),
                    premise=class_indices(value["if"], classes, where), text=text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PretrainlabError(f"{where}: '{kind}' takes a whole number >= 0, got {value!r}")
    group = class_indices(entry["of"], classes, where) if "of" in entry else tuple(range(len(classes)))
    if value > len(group):
        raise PretrainlabError(f"{where}: '{kind}: {value}' asks for more than the {len(group)} classes it counts")
    return Rule(kind, group, count=value, text=text)


def parse_rules(text: str, classes: Sequence[str], where: str = "rules") -> list[Rule]:
    """YAML text -> rules over `classes` (the dataset's class names, index = label)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PretrainlabError(f"{where}: not valid YAML ({' '.join(str(error).split())})") from None
    entries = document.get("rules") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise PretrainlabError(f"{where}: expected a non-empty list of rules under 'rules:'")
    return [parse_rule(entry, [str(name) for name in classes], f"{where}, rule {number}")
            for number, entry in enumerate(entries, start=1)]


def load_rules(path: str | Path, classes: Sequence[str]) -> list[Rule]:
    """Reads a rule file; a missing file or a bad rule is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise PretrainlabError(f"rule file '{path}' does not exist (give --option rules=PATH to a YAML file)")
    return parse_rules(path.read_text(), classes, f"rule file '{path}'")
