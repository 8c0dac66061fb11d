"""The classical baseline: hand-made features (HOG, LBP, colour histograms, raw pixels) and a
scikit-learn classifier, with the same outputs as `jaxcls.evaluate`.

    python -m jaxcls.classic --dataset=folder:../shared/data/cifar10 --features=hog \
        --classifier=rbf_svm

`features.py` turns uint8 images into vectors (in worker processes, with progress lines);
`classifiers.py` builds the scikit-learn pipelines and their hyperparameter grids;
`__main__.py` runs both and writes OUT_DIR/eval/<split>/ (metrics.json, predictions.npz,
report.html), so a HOG + SVM row sits in the same table as a trained network's.
"""
