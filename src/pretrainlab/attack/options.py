"""Every `--option KEY=VALUE` that `pretrainlab attack` reads, and the settings built from them.

`check_attack_options` runs in `make_plan`, before any work: a key no part reads (a typo such as `stepz=20`
would otherwise be ignored silently and the attack run at its default) or a value of the wrong type or range
stops with one line naming what is valid, like the evaluation protocols' declared options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pretrainlab.attack.defences.adversarial_training import AdversarialTraining
from pretrainlab.attack.fooling import FoolingSettings
from pretrainlab.attack.input_space import AttackSettings, parse_eps
from pretrainlab.attack.universal import UniversalSettings
from pretrainlab.errors import PretrainlabError, refuse_unknown_options
from pretrainlab.eval.finetuning import FINETUNE_OPTIONS


def text(value: Any) -> str:
    return str(value)


def whole(value: Any) -> int:
    """3, "3" or 3.0 -> 3; 1.5 or "many" raise ValueError (int() would truncate 1.5 silently)."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def eps_text(value: Any) -> float:
    return parse_eps(str(value))


# option -> (conversion, what reads it). AttackSettings' fields and the fine-tuning settings are added below.
OWN_OPTIONS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "adv_method": (text, "adv_finetune"), "adv_eps": (eps_text, "adv_finetune"), "adv_steps": (whole, "adv_finetune"),
    "adv_beta": (float, "adv_finetune"), "adv_step_factor": (float, "adv_finetune"), "adv_out": (text, "adv_finetune"),
    "universal_eps": (eps_text, "universal"), "universal_patch_fraction": (float, "universal"),
    "universal_steps": (whole, "universal"), "universal_batch_size": (whole, "universal"),
    "universal_lr": (float, "universal"), "universal_alpha": (float, "universal"),
    "universal_radius": (float, "universal"), "universal_images": (whole, "universal"),
    "universal_heads": (text, "universal"), "surrogate": (text, "universal"), "other_data": (text, "universal"),
    "transfer": (text, "universal"),
    "feature_layer": (text, "feature"), "feature_pairs": (whole, "feature"), "feature_steps": (whole, "feature"),
    "fooling_threshold": (float, "fooling"), "fooling_gradient_steps": (whole, "fooling"),
    "fooling_gradient_step": (float, "fooling"), "fooling_gradient_restarts": (whole, "fooling"),
    "fooling_generations": (whole, "fooling"), "fooling_population": (whole, "fooling"),
    "fooling_mutation_rate": (float, "fooling"), "fooling_pixel_noise": (float, "fooling"),
    "fooling_weight_noise": (float, "fooling"), "fooling_methods": (text, "fooling"),
    "raw_shot": (float, "raw_isp"), "raw_read": (float, "raw_isp"), "raw_isp_steps": (whole, "raw_isp"),
}


def known_options() -> set[str]:
    from dataclasses import fields

    return set(OWN_OPTIONS) | {item.name for item in fields(AttackSettings)} | set(FINETUNE_OPTIONS)


def typed(options: dict[str, Any], key: str, default: Any = None) -> Any:
    """options[key] converted as OWN_OPTIONS says (PretrainlabError when it does not convert), or `default`."""
    if options.get(key) is None:
        return default
    convert = OWN_OPTIONS[key][0]
    try:
        return convert(options[key])
    except (TypeError, ValueError):
        kind = {whole: "a whole number", float: "a number"}.get(convert, "valid")
        raise PretrainlabError(f"option {key} must be {kind}, got {options[key]!r}") from None


def prefixed(options: dict[str, Any], prefix: str, names: tuple[str, ...]) -> dict[str, Any]:
    """{name: typed value} of the options PREFIX + name that are given."""
    return {name: typed(options, prefix + name) for name in names if options.get(prefix + name) is not None}


def universal_settings(options: dict[str, Any], eps: list[float]) -> UniversalSettings:
    """AdvEncoder's settings: universal_eps (default: the largest --eps), universal_steps, ..."""
    values = prefixed(options, "universal_", ("patch_fraction", "steps", "batch_size", "lr", "alpha", "radius"))
    return UniversalSettings(eps=typed(options, "universal_eps", max(eps)), **values)


def fooling_settings(options: dict[str, Any]) -> FoolingSettings:
    return FoolingSettings(**prefixed(options, "fooling_", ("threshold", "gradient_steps", "gradient_step",
                                                             "gradient_restarts", "generations", "population",
                                                             "mutation_rate", "pixel_noise", "weight_noise")))


def adversarial_training_config(options: dict[str, Any]) -> AdversarialTraining:
    values = prefixed(options, "adv_", ("steps", "beta", "step_factor"))
    return AdversarialTraining(method=typed(options, "adv_method", "pgd"), eps=typed(options, "adv_eps", 8 / 255),
                               **values)


def check_attack_options(options: dict[str, Any], eps: list[float], universal: bool = True) -> None:
    """Refuses an unknown key (naming the closest) and builds every settings object once, so a bad value or range
    fails here rather than after an hour of attacks."""
    refuse_unknown_options(options, known_options(), "no attack or defence")
    for key in OWN_OPTIONS:
        typed(options, key)
    AttackSettings.from_options(options)
    if universal:  # its default budget is the largest --eps, an L-inf bound: L2 runs of other attacks may exceed 1
        universal_settings(options, eps)
    fooling_settings(options)
    adversarial_training_config(options)
