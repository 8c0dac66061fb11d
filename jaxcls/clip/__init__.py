"""CLIP in Flax: image and text towers, weights, the BPE tokenizer, zero-shot classification.

    from jaxcls.clip import tokenizer, weights
    model, variables, pre = weights.load("ViT-B-32.pt")          # or a Hugging Face folder
    text = model.apply(variables, tokenizer.default()(["a photo of a cat."]),
                       method="encode_text")

- model.py: ImageTower (jaxcls's ViT with CLIP's ln_pre, bias-free patches, QuickGELU, `proj`),
  TextTower (causal encoder, end-of-text pooling, `text_projection`), CLIP, CONFIGS;
- resnet.py: RN50's ModifiedResNet image tower (attention pooling);
- weights.py: OpenAI / open_clip state dicts and Hugging Face CLIPModel folders -> variables;
- tokenizer.py: the 77-token BPE tokenizer (vocab shipped here, MIT; see LICENSE);
- zeroshot.py: prompt-ensemble classifiers and `python -m jaxcls.zeroshot`;
- templates/: CLIP's CIFAR-10 (18) and ImageNet (80) prompt templates.
"""
