"""Adversarial robustness: attacks in JAX (`pgd`: FGSM, PGD; `apgd`: APGD-CE / APGD-DLR,
untargeted and targeted, as AutoAttack runs them; `attacks`: by name), the command
`python -m jaxcls.attack` (`benchmark`) and adversarial training (`training`: PGD-AT, TRADES,
turned on by `config.adversarial`)."""
