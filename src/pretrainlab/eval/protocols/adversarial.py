"""The `adversarial` protocol: robust accuracy of the backbone + linear probe under input-space attacks.

The standard part of `pretrainlab attack` for the gauntlet: the linear probe of eval/linear.py fitted on
clean training features, then PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", arXiv 1706.06083; torchattacks, 10 steps, step 2.5 eps / steps) at L-inf 1, 2, 4 and 8 / 255 in
pixel units, on a fixed class-balanced subset of the test split. The attack machinery lives in the
`attack` layer below; it is imported inside the protocol so the evaluation layer does not depend on it
at import time.

Metrics: `top1@clean`, then `ATTACK_NORM@EPS` (e.g. `pgd_linf@8/255`) in percent, each with its seconds.
Options: attacks (default [pgd]), eps (default [1/255, 2/255, 4/255, 8/255]), norm (linf | l2),
max_test (default 500; 0 = the whole test split), steps and the other `AttackSettings` fields, seed.
"""

from __future__ import annotations

from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

# The AttackSettings fields (pretrainlab.attack.input_space), spelled out so this module need not import the
# attack layer at import time; a test keeps the two lists equal.
ATTACK_SETTINGS_OPTIONS = ("steps", "step_factor", "eot_samples", "square_queries", "cw_c", "cw_steps", "cw_lr",
                           "restarts")


@PROTOCOLS.register("adversarial")
@takes_options("attacks", "eps", "norm", "max_test", *ATTACK_SETTINGS_OPTIONS)
def adversarial_protocol(context: EvalContext) -> list[EvalResult]:
    from pretrainlab.attack.evaluation import DEFAULT_EPS, DEFAULT_MAX_TEST, InputSpaceRun, run_input_space, test_images
    from pretrainlab.attack.input_space import AttackSettings, check_attack, parse_eps
    from pretrainlab.attack.model import probe_subject
    from pretrainlab.attack.plan import listed

    options = context.options
    seed = int(options.get("seed", 0))
    norm = str(options.get("norm", "linf"))
    attacks = listed(options.get("attacks"), ["pgd"])
    for name in attacks:
        check_attack(name, norm)
    eps = [parse_eps(str(value), norm) for value in listed(options.get("eps"), [str(e) for e in DEFAULT_EPS])]
    max_test = int(options.get("max_test", DEFAULT_MAX_TEST))
    subject = probe_subject(context.target, context.source, context.device, seed,
                            train_features=context.features("train"))
    images, labels, count = test_images(context.target, context.source.test, max_test)
    run = InputSpaceRun(attacks, eps, norm, "adversarial", settings=AttackSettings.from_options(options), seed=seed,
                        extra={**context.base_settings(), "test_images_attacked": count})
    return run_input_space(subject, images, labels, run, context.source.spec, context.target.label)
