"""CLIP zero-shot classification of an image dataset from text prompts alone:

    python -m jaxcls.zeroshot --weights=ViT-B-32.pt --dataset=folder:PATH --templates=cifar10

The model, tokenizer and prompt ensembles are in jaxcls/clip/ (see jaxcls/clip/zeroshot.py).
"""
