"""Every config key jaxcls reads, with its default and what it means.

Recipes in configs/ start from `get_config()` here and change what differs; `validate` rejects a
key that is not below, so a typo fails at start with its name. Durations come in pairs
(`num_epochs`/`num_steps`, `warmup_epochs`/`warmup_steps`, `eval_every_epochs`/`eval_every_steps`):
set either; where both are set, the `_steps` one wins.
"""

import importlib.util
import os

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # --- data ---------------------------------------------------------------------------------
    c.dataset = "digits"  # digits | folder:PATH | tfds:NAME | synthetic
    c.data_dir = ""  # TFDS data_dir ("" = TFDS's default, ~/tensorflow_datasets)
    c.tfds_train_split = "train"  # TFDS split to train on
    c.tfds_eval_split = "test"  # TFDS split to evaluate on ("validation" for imagenet2012)
    c.image_size = 32  # images reach the model as image_size x image_size RGB
    c.crop_frac = 1.0  # host resize: shorter side to image_size / crop_frac, then center crop
    c.holdout_fraction = 0.2  # digits, or a folder without test/ or val/: stratified hold-out
    c.val_fraction = 0.0  # stratified slice of train never trained on, for calibration (0: none)
    c.num_classes = 10  # classes of `synthetic` (other datasets know their own)
    c.synthetic_examples = 10_000  # size of the `synthetic` train split
    c.cache_max_gib = 4.0  # folder: decode into RAM once when it fits in this many GiB; 0: stream
    c.num_workers = 0  # grain worker processes that decode files (0: threads in this process)
    c.num_threads = 4  # grain reader threads per process
    c.input = ml_collections.ConfigDict()  # host input pipeline (nested keys below)
    c.input.backend = "grain"  # grain (no TensorFlow) | tf: tf.data over TFDS TFRecord files
    c.input.shuffle_buffer = 10_000  # tf backend: examples in tf.data's shuffle buffer
    c.tfds_label_key = "label"  # TFDS label feature (multilabel: Sequence(ClassLabel), voc: labels)

    # --- task, loss and class imbalance -------------------------------------------------------
    c.task = "multiclass"  # multiclass (softmax; binary: 2 classes) | multilabel (sigmoids)
    c.loss = "cross_entropy"  # cross_entropy (multilabel: binary cross-entropy) | focal
    c.focal_gamma = 2.0  # focal loss: (1 - p_t)^gamma down-weights easy examples (0: cross-entropy)
    c.focal_alpha = -1.0  # multilabel focal: alpha on positives, 1 - alpha on negatives (<0: off)
    c.class_weights = ""  # per-class loss weight: "" | balanced (n / (C * count_c)) | "w1,w2,..."
    c.class_balanced_sampler = False  # train on classes drawn uniformly (examples with replacement)

    # --- device-side augmentation (inside the jitted step) -----------------------------------
    c.augment = "crop(4)|flip"  # ops "|"-separated, in order (jaxcls/data/augment.py); "": none
    c.mixup = ml_collections.ConfigDict()  # mixup / CutMix of example pairs (off: both alphas 0)
    c.mixup.mixup_alpha = 0.0  # mixup lambda ~ Beta(alpha, alpha) per example (0: no mixup)
    c.mixup.cutmix_alpha = 0.0  # CutMix lambda ~ Beta(alpha, alpha) per example (0: no CutMix)
    c.mixup.cutmix_minmax = ()  # (lo, hi): CutMix box sides uniform in lo..hi x image (not alpha)
    c.mixup.prob = 1.0  # probability that an example is mixed at all
    c.mixup.switch_prob = 0.5  # both alphas > 0: probability of CutMix rather than mixup
    c.mean = (0.485, 0.456, 0.406)  # per-channel mean in [0, 1] units, subtracted after /255
    c.std = (0.229, 0.224, 0.225)  # per-channel std in [0, 1] units

    # --- model ---------------------------------------------------------------------------------
    c.model = "resnet18"  # a name from jaxcls.models.MODELS
    c.model_kwargs = ml_collections.ConfigDict()  # overrides of the model's fields (width, stem)
    c.dtype = "float32"  # compute dtype: float32 | bfloat16 (params and optimizer stay float32)
    c.dropout_rate = 0.0  # ViT: dropout after attention and in the MLP
    c.drop_path_rate = 0.0  # stochastic depth of the last block, linear from 0 (all families)
    c.head_dropout_rate = 0.0  # dropout on the pooled features before the head (all families)
    c.remat = False  # ViT: recompute each block in the backward pass (saves activation memory)
    c.attention = ""  # ViT attention kernel: "" (XLA chooses) | xla | cudnn (GPU, bf16)

    # --- pretrained weights and transfer learning ------------------------------------------------
    # Regexes below are matched against whole parameter paths such as 'block3/attn/query/kernel',
    # 'stage4_block2/Conv_0/kernel' or 'head/kernel'; in lists of pairs the first match wins.
    c.init_from = ""  # start from: HF folder, .safetensors, .pth, .npz, or a jaxcls checkpoint
    c.init_layout = "auto"  # auto | hf | timm | torchvision | big_vision | lukemelas | openai |
    # jaxcls (openai: OpenAI / open_clip CLIP, whose image tower a clip_vit model takes)
    c.init_new_head = False  # a fresh head even when the class count matches (new classes)
    c.init_preprocessing = True  # use the weights' mean/std/crop_frac (their training inputs)
    c.init_head = ""  # "zeroshot": CLIP init_from + a clip_vit model: the head is CLIP's zero-shot
    # classifier of the class names (prompt ensemble below), the start WiSE-FT interpolates from
    c.zeroshot_templates = "cifar10"  # init_head=zeroshot: cifar10 | imagenet | a template file
    c.zeroshot_classes = ""  # init_head=zeroshot: prompt class names "a,b,c" ("": the dataset's)
    c.wise_ft_alphas = ()  # WiSE-FT: at each eval also evaluate (1-a) * initial + a * current
    # params for each a, as split eval_wise_ft_<a> (the initial params stay on the devices)
    c.freeze = ()  # regexes of parameters never trained (no optimizer state, no weight decay)
    c.unfreeze_epochs = ()  # ((regex, epoch), ...): matching parameters train from that epoch
    c.lr_multipliers = ()  # ((regex, multiplier), ...) on the learning rate (0: frozen)
    c.wd_multipliers = ()  # ((regex, multiplier), ...) on the weight decay
    c.layer_decay = 1.0  # layer-wise lr decay: block i of L gets layer_decay**(L + 1 - i) (1: off)
    c.ema_decay = 0.0  # keep an EMA of the params, evaluated beside them as split eval_ema (0: off)
    c.quantization = ""  # quantization-aware training: "w8a8" = int8 fake quant (quantize/qat.py)
    c.freeze_epochs = ()  # ((regex, epoch), ...): matching parameters stop training at that epoch
    c.whiten_init = ""  # conv kernel path set from train-patch statistics ("": off; whitening.py)
    c.whiten_init_images = 5000  # whiten_init: a seeded sample of this many training images
    c.whiten_init_eps = 5e-4  # whiten_init: filters are eigenvectors / sqrt(eigenvalue + eps)

    # --- optimisation --------------------------------------------------------------------------
    c.batch_size = 128  # global batch, split over all devices and processes
    c.grad_accum_steps = 1  # split each batch into this many micro-batches, one update per batch
    c.num_epochs = placeholder(float)  # training length in epochs ...
    c.num_steps = placeholder(int)  # ... or in steps (wins when both are set)
    c.optimizer = "sgd"  # sgd | adamw | muon (Newton-Schulz on conv kernels, sgd on the rest)
    c.learning_rate = 0.1  # peak learning rate, reached at the end of warm-up
    c.momentum = 0.9  # sgd momentum (0: plain SGD)
    c.nesterov = False  # sgd: Nesterov momentum
    c.muon_momentum = 0.95  # muon: Nesterov momentum of the conv kernels (orthogonalised after)
    c.muon_ns_steps = 5  # muon: Newton-Schulz iterations
    c.muon_renormalize = False  # muon: rescale each kernel to norm sqrt(out channels) each step
    c.b1 = 0.9  # adamw beta1
    c.b2 = 0.999  # adamw beta2
    c.weight_decay = 5e-4  # decoupled for adamw, L2-style for sgd; never on biases or norm scales
    c.decay_all = False  # weight decay on biases and norm parameters too (airbench decays all)
    c.decoupled_decay = False  # sgd: weight_decay is the decay per step at peak lr (any lr mult)
    c.schedule = "cosine"  # cosine | step | constant | plateau (cut on stalls) | piecewise_linear
    c.schedule_points = ()  # piecewise_linear: ((fraction of the run, x learning_rate), ...)
    c.warmup_epochs = placeholder(float)  # linear warm-up from 0, in epochs ...
    c.warmup_steps = placeholder(int)  # ... or steps
    c.min_learning_rate = 0.0  # cosine: final learning rate
    c.decay_epochs = (30, 60, 80)  # step: epochs at which the rate is multiplied by decay_factor
    c.decay_factor = 0.1  # step: multiplier at each of decay_epochs
    c.plateau_metric = "loss"  # plateau: eval metric watched (loss: lower is better; others higher)
    c.plateau_patience = 3  # plateau: evaluations without improvement before the rate is cut
    c.plateau_factor = 0.1  # plateau: multiplier of the learning rate at each cut
    c.plateau_min_delta = 0.0  # plateau: an improvement must beat the best by more than this
    c.plateau_min_learning_rate = 0.0  # plateau: the rate is never cut below this
    c.label_smoothing = 0.0  # cross-entropy label smoothing
    c.lookahead_every = 0  # every N steps the weights move to a slow copy, and it to them (0: off)
    c.lookahead_decay = 0.95**5  # lookahead: the slow copy keeps this x (step / steps)^power ...
    c.lookahead_power = 3.0  # ... of itself at each sync (1 at the last step: the run ends on it)
    c.grad_clip_norm = 0.0  # clip gradients to this global norm (0: off)

    # --- knowledge distillation from a frozen teacher (jaxcls/distill/) -----------------------
    c.distill = ml_collections.ConfigDict()  # off while distill.teacher is ""
    c.distill.teacher = ""  # PATH | MODEL:PATH (workdir, checkpoints/STEP, weights); "a,b": mean
    c.distill.teacher_layout = "auto"  # layout of MODEL:PATH weights (as config.init_layout)
    c.distill.loss = "kl"  # kl (Hinton) | hard (argmax) | deit (head_dist) | function_matching
    c.distill.alpha = 0.5  # kl, hard, deit: weight of the teacher's term (1 - alpha: labels')
    c.distill.temperature = 4.0  # kl, function_matching: softmax temperature T (term x T^2)
    c.distill.teacher_view = "same"  # same: the student's augmented view | independent: its own

    # --- domain adaptation: DANN (jaxcls/adapt/) ----------------------------------------------
    c.domain_adaptation = ml_collections.ConfigDict()  # off while domain_adaptation.target is ""
    c.domain_adaptation.target = ""  # unlabeled target images: a dataset spec (folder:PATH)
    c.domain_adaptation.weight = 1.0  # weight of the domain classifier's loss
    c.domain_adaptation.gamma = 10.0  # GRL scale lambda = 2 / (1 + exp(-gamma p)) - 1, p: progress
    c.domain_adaptation.hidden = 256  # domain classifier: hidden ReLU units (0: linear)

    # --- adversarial training (jaxcls/attack/training.py) ---------------------------------------
    c.adversarial = ml_collections.ConfigDict()  # train on attacked images (nested keys below)
    c.adversarial.method = "none"  # none | pgd (PGD-AT, Madry et al.) | trades (Zhang et al.)
    c.adversarial.norm = "linf"  # threat model of the attack: linf | l2, in pixel units [0, 1]
    c.adversarial.eps = 8 / 255  # radius of the perturbation ball
    c.adversarial.steps = 5  # PGD steps per training batch (the step costs ~steps + 1 passes)
    c.adversarial.step_size = 0.0  # PGD step size (0: 2.5 * eps / steps, Madry et al.'s rule)
    c.adversarial.beta = 6.0  # trades: weight of KL(clean || adversarial) beside the clean loss

    # --- devices and sharding (jaxcls/sharding.py) ----------------------------------------------
    c.mesh = (("data", -1),)  # mesh axes (name, size), -1: the rest; the batch splits over all
    c.sharding = "dp"  # dp: train state replicated | fsdp: its big arrays split over 'data'
    c.fsdp_min_size = 2**14  # fsdp: arrays with fewer elements (biases, norms) stay replicated

    # --- loop, evaluation, checkpoints ------------------------------------------------------------
    c.seed = 0  # one seed for init, data order, augmentation and splits
    c.log_every_steps = 50  # progress line, TensorBoard and metrics.jsonl every N steps
    c.stop_timeout_s = 300.0  # after SIGTERM: exit 128+signal if no step finishes for this long
    c.eval_every_epochs = placeholder(float)  # evaluate every N epochs ...
    c.eval_every_steps = placeholder(int)  # ... or steps (neither: only at the end)
    c.final_eval = True  # evaluate when training ends (benchmarks turn it off)
    c.eval_tta = ""  # TTA views of the in-training evals, e.g. "translate(1)|flip" (data/tta.py)
    c.checkpoint_every_steps = 1000  # also saved at every evaluation and at the end
    c.keep_checkpoints = 3  # keep the last K checkpoints, plus the best by eval accuracy
    c.early_stopping_metric = ""  # stop when this eval metric stalls ("": off; loss is minimised)
    c.early_stopping_patience = 5  # early stopping: evaluations without improvement before stopping
    c.early_stopping_min_delta = 0.0  # early stopping: must beat the best by more than this
    return c


def load_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of the config file at `path` (for notebooks, sweeps and tests; the command
    line uses ml_collections' --config flag)."""
    return load_module(path, "config file").get_config()


def load_module(path: str, kind: str = "file"):
    """The Python file at `path` (a config or sweep file) as a module."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
