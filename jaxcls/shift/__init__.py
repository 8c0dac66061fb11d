"""Is the deployment data still what the model was trained on? Shift detection and label-shift
correction for unlabeled target images.

    python -m jaxcls.shift --workdir=W --target=PATH [--target=PATH2 ...]

For a trained run and a folder (or files) of unlabeled target images, `__main__.py` computes:
- per-image out-of-distribution scores (`scores.py`): 1 - max softmax probability, the energy
  -logsumexp(logits), and the Mahalanobis distance of the penultimate features (the head's
  input) to the nearest class mean under a covariance shared by the classes, fitted on train;
  each flags the images above the score that 95% of the eval split stays below;
- a two-sample test on the features (`mmd.py`): the kernel MMD between the eval split and the
  target, with a permutation p-value;
- the target's class priors under label shift (`priors.py`): BBSE (Lipton et al. 2018, from
  the eval split's confusion matrix) and EM prior adaptation (Saerens et al. 2002), and the
  predictions corrected to the EM priors.

It writes W/shift/<target>/metrics.json, scores.npz (per-image scores, corrected probabilities)
and report.html with the score histograms.
"""
