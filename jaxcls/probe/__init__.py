"""Linear probes and k-NN on the frozen features of any network: a jaxcls run, or imported
pretrained weights (timm, torchvision, Hugging Face, big_vision, jaxcls).

    python -m jaxcls.probe --workdir=runs/cifar10 [--dataset=folder:PATH]
    python -m jaxcls.probe --weights=PATH --model=efficientnet_lite0 --dataset=folder:PATH

`features.py` computes the input of the model's classifier (`head`) for every image, batched
over all devices, cached as .npz; `__main__.py` fits a scikit-learn logistic regression on
them, its L2 strength chosen by cross-validation (jaxcls.classic.baseline.fit), adds the k-NN
accuracy, and writes the outputs of `jaxcls.evaluate`.
"""
