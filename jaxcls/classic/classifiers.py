"""scikit-learn classifiers for feature vectors, each standardised first, with the grid its
hyperparameters are cross-validated over.

`rbf_svm` is an exact kernel SVM (`SVC`) up to `exact_svm_max` training examples; above that a
Nystroem approximation of the same RBF kernel (`nystroem_components` landmarks) feeds a linear
SVM, because SVC's cost grows quadratically with the examples (50,000 CIFAR-10 images: hours).
"""

import numpy as np
from scipy.special import log_softmax
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

NAMES = ("linear_svm", "rbf_svm", "logreg", "knn", "random_forest")


def check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"--classifier={name!r} is unknown; use one of {list(NAMES)}")


def build(name: str, num_examples: int, seed: int = 0, exact_svm_max: int = 10000,
          nystroem_components: int = 2000) -> tuple[Pipeline, dict]:
    """(pipeline, grid): the classifier `name` for `num_examples` training vectors, and the
    hyperparameter grid for GridSearchCV (keys `clf__...`)."""
    check_name(name)
    steps: list[tuple[str, BaseEstimator]] = [("scale", StandardScaler())]
    if name == "linear_svm":
        clf, grid = LinearSVC(C=0.01, random_state=seed), {"clf__C": [0.001, 0.01, 0.1]}
    elif name == "rbf_svm" and num_examples <= exact_svm_max:
        clf, grid = SVC(C=1.0, kernel="rbf", gamma="scale"), {"clf__C": [1.0, 3.0, 10.0]}
    elif name == "rbf_svm":  # gamma 1/D on standardised inputs is SVC's gamma="scale"
        steps.append(("kernel", Nystroem(n_components=min(nystroem_components, num_examples),
                                         random_state=seed)))
        clf, grid = LinearSVC(C=1.0, random_state=seed), {"clf__C": [0.01, 0.1, 1.0]}
    elif name == "logreg":
        clf, grid = LogisticRegression(C=1.0, max_iter=2000), {"clf__C": [0.01, 0.1, 1.0]}
    elif name == "knn":
        clf = KNeighborsClassifier(n_neighbors=10, weights="distance")
        grid = {"clf__n_neighbors": [1, 5, 10, 20]}
    else:
        clf = RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=seed)
        grid = {"clf__min_samples_leaf": [1, 3]}
    return Pipeline([*steps, ("clf", clf)]), grid


def log_probs(pipeline: Pipeline, x: np.ndarray, num_classes: int) -> np.ndarray:
    """[N, num_classes] log-probabilities: the classifier's own probabilities where it has
    them, else the log-softmax of its decision scores (SVMs; calibrated afterwards by the
    temperature the evaluation fits)."""
    classes = pipeline.classes_
    if hasattr(pipeline, "predict_proba"):
        scores = np.log(np.clip(pipeline.predict_proba(x), 1e-7, 1.0))
    else:
        scores = pipeline.decision_function(x)
        if scores.ndim == 1:  # two classes: one score, positive for classes[1]
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        scores = log_softmax(scores, axis=-1)
    out = np.full((len(x), num_classes), np.log(1e-7))  # classes absent from training
    out[:, classes] = scores
    return log_softmax(out, axis=-1)
